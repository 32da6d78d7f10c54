<?php
// The one SP the IdP knows: sidegate under test. Not an XML metadata document: the harness
// writes the SP's parameters to sp.json next to this file (JSON, so no PHP quoting in Rust):
//   {"entity_id": "...", "acs_url": "...", "slo_url": "...", "cert_data": "MIIC..." | null,
//    "encrypt_to": "MIIC..." | null}
// cert_data is the base64 body of the SP's signing certificate (PEM without the armor);
// encrypt_to, the certificate assertions are encrypted to (EncryptedAssertion).
$sp = json_decode(file_get_contents(__DIR__ . '/sp.json'), true, 8, JSON_THROW_ON_ERROR);
$redirect = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
$entry = [
    'AssertionConsumerService' => [
        ['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST', 'Location' => $sp['acs_url'], 'index' => 0],
    ],
    // One location for both LogoutRequests and LogoutResponses sent to the SP.
    'SingleLogoutService' => [
        ['Binding' => $redirect, 'Location' => $sp['slo_url'], 'ResponseLocation' => $sp['slo_url']],
    ],
];
if (!empty($sp['cert_data'])) {
    // With a certificate, the SP's AuthnRequests and LogoutRequests/Responses must be
    // signed with it; without one, SSP 1.19 accepts them unsigned (and does not check a
    // signature that happens to be present).
    $entry['certData'] = $sp['cert_data'];
    $entry['validate.authnrequest'] = true;
    $entry['validate.logout'] = true;
}
if (!empty($sp['encrypt_to'])) {
    // With `keys`, SSP takes signing and encryption certificates from it, not certData.
    $entry['assertion.encryption'] = true;
    $entry['keys'] = [[
        'encryption' => true, 'signing' => false,
        'type' => 'X509Certificate', 'X509Certificate' => $sp['encrypt_to'],
    ]];
    if (!empty($sp['cert_data'])) {
        $entry['keys'][] = [
            'encryption' => false, 'signing' => true,
            'type' => 'X509Certificate', 'X509Certificate' => $sp['cert_data'],
        ];
    }
}
$metadata[$sp['entity_id']] = $entry;
