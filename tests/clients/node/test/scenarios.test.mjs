// A cart from start to order, and a to-do list, called from Node with @grpc/grpc-js on clients
// that @grpc/proto-loader builds from proto/ at run time. Run by tests/tests/clients_node.rs.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { addItem, call, close, nextUntil, quantityOf, requestId, servers, watch } from './support.mjs';

after(close);

test('a cart: items, a discount, a watch, checkout, the order', async () => {
  const { cart } = servers();
  const key = 'node-cart';
  const started = await call(cart, 'StartSession', {
    key,
    domain: 'shop.example',
    landing: '/sale',
    ip: '203.0.113.9',
  });
  assert.equal(started.status, 'SESSION_STATUS_ACTIVE');
  assert.equal(started.items.length, 0);

  const watcher = watch(cart, 'WatchSession', { key });
  try {
    const versions = [];
    // The watch's message for the change that answered `reply`.
    const watched = async (reply) => {
      const message = await nextUntil(watcher, (s) => s.version >= reply.version, `version ${reply.version}`);
      versions.push(message.version);
      assert.equal(message.version, reply.version, 'a change the watch skipped');
      assert.deepEqual(message.items, reply.items);
      return message;
    };
    assert.equal((await watcher.next()).version, started.version, "the watch's first state");

    const rid = requestId();
    const added = await call(cart, 'AddItem', addItem(key, 'rocket', 2, 2000, { rid }));
    assert.equal(quantityOf(added, 'rocket'), 2);
    await watched(added);
    // The README: reuse the request id when retrying; it is applied at most once.
    const retried = await call(cart, 'AddItem', addItem(key, 'rocket', 2, 2000, { rid }));
    assert.deepEqual([retried.version, quantityOf(retried, 'rocket')], [added.version, 2]);

    const mug = await call(cart, 'AddItem', addItem(key, 'mug', 1, 500));
    assert.deepEqual(
      mug.items.map((i) => [i.sku, i.quantity]),
      [['rocket', 2], ['mug', 1]],
    );
    await watched(mug);

    const removed = await call(cart, 'RemoveItem', { key, sku: 'rocket', quantity: 1, request_id: requestId() });
    assert.equal(quantityOf(removed, 'rocket'), 1);
    await watched(removed);

    // SAVE10 is 10% in the catalog the Rust side starts session-svc with.
    const discounted = await call(cart, 'ApplyDiscount', { key, code: 'SAVE10', request_id: requestId() });
    assert.deepEqual(discounted.discounts.map((d) => d.code), ['SAVE10']);
    assert.deepEqual(
      [discounted.subtotal.minor_units, discounted.discount_total.minor_units, discounted.total.minor_units],
      [2500, 250, 2250],
    );
    assert.equal(discounted.total.currency_code, 'USD');
    await watched(discounted);

    const checkoutId = requestId();
    const order = await call(cart, 'Checkout', { key, request_id: checkoutId });
    assert.ok(order.order_id);
    assert.equal(order.session_key, key);
    assert.equal(order.total.minor_units, 2250);
    assert.deepEqual(
      order.items.map((i) => [i.sku, i.quantity]),
      [['rocket', 1], ['mug', 1]],
    );

    const final = await nextUntil(watcher, (s) => s.status === 'SESSION_STATUS_CHECKED_OUT', 'checked out');
    assert.equal(final.order_id, order.order_id);
    assert.deepEqual(versions, [...new Set(versions)].sort((a, b) => a - b), 'watch versions in order');
    // A checked-out cart is final: the stream ends there, with OK.
    assert.equal(await watcher.next(), null);

    const got = await call(cart, 'GetSession', { key });
    assert.equal(got.status, 'SESSION_STATUS_CHECKED_OUT');
    assert.equal(got.order_id, order.order_id);
    assert.equal(got.total.minor_units, 2250);
    assert.match(got.logs.at(-1).event, /checked_out/);
    // A retried Checkout answers the stored order.
    const again = await call(cart, 'Checkout', { key, request_id: checkoutId });
    assert.equal(again.order_id, order.order_id);
  } finally {
    watcher.cancel();
  }
});

test('a to-do list: add, list all and by date, update, delete, watch', async () => {
  const { todo } = servers();
  const list = 'node-groceries';
  const add = (date, title, rid) => call(todo, 'AddEntry', { list, date, title, request_id: rid ?? requestId() });
  const entries = async (date = '') => {
    const reply = await call(todo, 'ListEntries', { list, date });
    assert.equal(reply.next_page_token, '');
    return reply.entries.map((e) => [e.id, e.date, e.title]);
  };
  const same = (expected) => (message) =>
    JSON.stringify(message.entries.map((e) => [e.id, e.date, e.title])) === JSON.stringify(expected);

  const milkId = requestId();
  const milk = await add('2026-11-22', 'milk', milkId);
  const watcher = watch(todo, 'WatchList', { list });
  try {
    await nextUntil(watcher, same([[milk.id, '2026-11-22', 'milk']]), 'the first entry');
    const eggs = await add('2026-11-23', 'eggs');
    const bread = await add('2026-11-22', 'bread');
    assert.equal(new Set([milk.id, eggs.id, bread.id]).size, 3);
    // Retried with the same request id: the same entry, not a second one.
    assert.equal((await add('2026-11-22', 'milk', milkId)).id, milk.id);
    const everything = [
      [milk.id, '2026-11-22', 'milk'],
      [bread.id, '2026-11-22', 'bread'],
      [eggs.id, '2026-11-23', 'eggs'],
    ];
    await nextUntil(watcher, same(everything), 'three entries');
    assert.deepEqual(await entries(), everything);
    assert.deepEqual(await entries('2026-11-22'), everything.slice(0, 2));
    assert.deepEqual(await entries('2026-11-24'), []);

    const updated = await call(todo, 'UpdateEntry', { list, id: milk.id, title: 'oat milk', request_id: requestId() });
    assert.deepEqual([updated.id, updated.date, updated.title], [milk.id, '2026-11-22', 'oat milk']);
    await nextUntil(watcher, same([[milk.id, '2026-11-22', 'oat milk'], ...everything.slice(1)]), 'the update');

    await call(todo, 'DeleteEntry', { list, id: bread.id, request_id: requestId() });
    const remaining = [
      [milk.id, '2026-11-22', 'oat milk'],
      [eggs.id, '2026-11-23', 'eggs'],
    ];
    await nextUntil(watcher, same(remaining), 'the deletion');
    assert.deepEqual(await entries(), remaining);
  } finally {
    watcher.cancel();
  }
});
