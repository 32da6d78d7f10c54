<?php
// The SPs the bench's SAML IdP (SimpleSAMLphp, configured from tests/saml-idp) knows:
// Apache + mod_auth_mellon (scenario h) and the SAML-only sidegate the login timing uses.
// bench/bench.sh writes them to sps.json next to this file (JSON: no PHP quoting in bash):
//   [{"entity_id": "...", "acs_url": "...", "slo_url": "...", "cert_data": "MIIC..." | null}]
// cert_data is the base64 body of the SP's signing certificate: with it, the IdP accepts
// only AuthnRequests signed by that SP's key.
$sps = json_decode(file_get_contents(__DIR__ . '/sps.json'), true, 8, JSON_THROW_ON_ERROR);
foreach ($sps as $sp) {
    $entry = [
        'AssertionConsumerService' => [[
            'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
            'Location' => $sp['acs_url'],
            'index' => 0,
        ]],
        'SingleLogoutService' => [[
            'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect',
            'Location' => $sp['slo_url'],
        ]],
    ];
    if (!empty($sp['cert_data'])) {
        $entry['certData'] = $sp['cert_data'];
        $entry['validate.authnrequest'] = true;
    }
    $metadata[$sp['entity_id']] = $entry;
}
