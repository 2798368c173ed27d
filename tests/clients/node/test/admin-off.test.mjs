// PERMISSION_DENIED: session-svc runs without an admin token, so its admin API is disabled.
// Run by tests/tests/clients_node.rs.

import { after, test } from 'node:test';

import { Code, call, close, expectError, servers } from './support.mjs';

after(close);

test('PERMISSION_DENIED with the admin API off', async () => {
  await expectError(
    () => call(servers().admin, 'GetStats', {}, { metadata: [['authorization', 'Bearer anything']] }),
    Code.PERMISSION_DENIED,
    'ADMIN_API_DISABLED',
  );
});
