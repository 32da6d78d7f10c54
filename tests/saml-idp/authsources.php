<?php
// The test users (static, no placeholders): the same people as the OIDC test provider,
// plus dave, whose role is unknown to sidegate and whose email is in another domain.
// Every attribute is multi-valued in SAML; `groups` may be empty (carol) to test that.
$config = [
    'test-users' => [
        'exampleauth:UserPass',
        'alice:alice-pw' => [
            'uid' => ['alice'], 'email' => ['alice@example.test'], 'displayName' => ['Alice Admin'],
            'role' => ['admin'], 'groups' => ['admins', 'devs'],
        ],
        'bob:bob-pw' => [
            'uid' => ['bob'], 'email' => ['bob@example.test'], 'displayName' => ['Bob Builder'],
            'role' => ['developer'], 'groups' => ['devs'],
        ],
        'carol:carol-pw' => [
            'uid' => ['carol'], 'email' => ['carol@example.test'], 'displayName' => ['Carol Viewer'],
            'role' => ['viewer'], 'groups' => [],
        ],
        'dave:dave-pw' => [
            'uid' => ['dave'], 'email' => ['dave@other.test'], 'displayName' => ['Dave Ops'],
            'role' => ['superuser'], 'groups' => ['ops'],
        ],
    ],
];
