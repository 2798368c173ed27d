"""session-svc and store-svc called the way a Python service would: grpcio with stubs generated
from proto/, errors read from the grpc-status-details-bin trailer with grpcio-status.

Run by tests/tests/clients_python.rs, which starts the servers each class needs and runs one
class (or one case) at a time: `python -m unittest -v clients_test.Scenarios`. The classes:

- Scenarios, Errors: a default stack (admin token set, the test discount catalog).
- WatcherLimit: session-svc with --max-watchers-per-key 1.
- AdminOff: session-svc without an admin token (the admin API disabled).
- StoreDown: store-svc killed before the case runs.
- ServerDeadline: session-svc with --default-deadline 1s; the Rust side freezes store-svc
  (SIGSTOP) between test_1_prepare and test_2_server_deadline, and thaws it before
  test_3_not_applied.

INTERNAL is not provoked: it means a bug (an actor's handler panicked), which no request can
cause from outside without faking it.
"""

import threading
import time
import unittest

import grpc

from support import (
    STORE_DOMAIN,
    TIMEOUT,
    Servers,
    add_item,
    admin_pb2,
    cart_pb2,
    expect_error,
    quantity_of,
    request_id,
    store_pb2,
    todo_pb2,
)

Code = grpc.StatusCode


def next_until(test, stream, done, what, limit=20):
    """Reads `stream` until a message satisfies `done`, at most `limit` messages."""
    for _ in range(limit):
        message = next(stream)
        if done(message):
            return message
    test.fail(f"{limit} messages on the stream and still not {what}")


class Scenarios(unittest.TestCase):
    def setUp(self):
        self.servers = Servers.get()

    def test_cart(self):
        cart = self.servers.cart
        key = "py-cart"
        started = cart.StartSession(
            cart_pb2.StartSessionRequest(
                key=key, domain="shop.example", landing="/sale", ip="203.0.113.9"
            ),
            timeout=TIMEOUT,
        )
        self.assertEqual(started.status, cart_pb2.SESSION_STATUS_ACTIVE)
        self.assertEqual(len(started.items), 0)

        watch = cart.WatchSession(cart_pb2.WatchSessionRequest(key=key), timeout=60)
        try:
            versions = []

            def watched(reply):
                """The watch's message for the change that answered `reply`."""
                message = next_until(
                    self, watch, lambda s: s.version >= reply.version, f"version {reply.version}"
                )
                versions.append(message.version)
                self.assertEqual(message.version, reply.version, "a change the watch skipped")
                self.assertEqual(list(message.items), list(reply.items))
                return message

            self.assertEqual(next(watch).version, started.version, "the watch's first state")

            rid = request_id()
            added = cart.AddItem(add_item(key, "rocket", 2, 2000, rid), timeout=TIMEOUT)
            self.assertEqual(quantity_of(added, "rocket"), 2)
            watched(added)
            # The README: reuse the request id when retrying; it is applied at most once.
            retried = cart.AddItem(add_item(key, "rocket", 2, 2000, rid), timeout=TIMEOUT)
            self.assertEqual((retried.version, quantity_of(retried, "rocket")), (added.version, 2))

            mug = cart.AddItem(add_item(key, "mug", 1, 500), timeout=TIMEOUT)
            self.assertEqual([(i.sku, i.quantity) for i in mug.items], [("rocket", 2), ("mug", 1)])
            watched(mug)

            removed = cart.RemoveItem(
                cart_pb2.RemoveItemRequest(key=key, sku="rocket", quantity=1, request_id=request_id()),
                timeout=TIMEOUT,
            )
            self.assertEqual(quantity_of(removed, "rocket"), 1)
            watched(removed)

            # SAVE10 is 10% in the catalog the Rust side starts session-svc with.
            discounted = cart.ApplyDiscount(
                cart_pb2.ApplyDiscountRequest(key=key, code="SAVE10", request_id=request_id()),
                timeout=TIMEOUT,
            )
            self.assertEqual([d.code for d in discounted.discounts], ["SAVE10"])
            self.assertEqual(
                (discounted.subtotal.minor_units, discounted.discount_total.minor_units,
                 discounted.total.minor_units),
                (2500, 250, 2250),
            )
            self.assertEqual(discounted.total.currency_code, "USD")
            watched(discounted)

            checkout_id = request_id()
            order = cart.Checkout(
                cart_pb2.CheckoutRequest(key=key, request_id=checkout_id), timeout=TIMEOUT
            )
            self.assertTrue(order.order_id)
            self.assertEqual(order.session_key, key)
            self.assertEqual(order.total.minor_units, 2250)
            self.assertEqual([(i.sku, i.quantity) for i in order.items], [("rocket", 1), ("mug", 1)])

            final = next_until(
                self,
                watch,
                lambda s: s.status == cart_pb2.SESSION_STATUS_CHECKED_OUT,
                "checked out",
            )
            self.assertEqual(final.order_id, order.order_id)
            self.assertEqual(versions, sorted(set(versions)), "watch versions in order")
            # A checked-out cart is final: the stream ends there, with OK.
            with self.assertRaises(StopIteration):
                next(watch)
            self.assertEqual(watch.code(), Code.OK)
        finally:
            watch.cancel()

        got = cart.GetSession(cart_pb2.GetSessionRequest(key=key), timeout=TIMEOUT)
        self.assertEqual(got.status, cart_pb2.SESSION_STATUS_CHECKED_OUT)
        self.assertEqual(got.order_id, order.order_id)
        self.assertEqual(got.total.minor_units, 2250)
        self.assertIn("checked_out", [log.event for log in got.logs][-1])
        # A retried Checkout answers the stored order.
        again = cart.Checkout(
            cart_pb2.CheckoutRequest(key=key, request_id=checkout_id), timeout=TIMEOUT
        )
        self.assertEqual(again.order_id, order.order_id)

    def test_todo(self):
        todo = self.servers.todo
        name = "py-groceries"

        def add(date, title, rid=None):
            return todo.AddEntry(
                todo_pb2.AddEntryRequest(
                    list=name, date=date, title=title, request_id=rid or request_id()
                ),
                timeout=TIMEOUT,
            )

        def entries(date=""):
            reply = todo.ListEntries(todo_pb2.ListEntriesRequest(list=name, date=date), timeout=TIMEOUT)
            self.assertEqual(reply.next_page_token, "")
            return [(e.id, e.date, e.title) for e in reply.entries]

        milk_id = request_id()
        milk = add("2026-11-22", "milk", milk_id)
        watch = todo.WatchList(todo_pb2.WatchListRequest(list=name), timeout=60)
        try:

            def watched(expected):
                return next_until(
                    self,
                    watch,
                    lambda m: [(e.id, e.date, e.title) for e in m.entries] == expected,
                    f"the list {expected}",
                )

            watched([(milk.id, "2026-11-22", "milk")])
            eggs = add("2026-11-23", "eggs")
            bread = add("2026-11-22", "bread")
            self.assertEqual(len({milk.id, eggs.id, bread.id}), 3)
            # Retried with the same request id: the same entry, not a second one.
            self.assertEqual(add("2026-11-22", "milk", milk_id).id, milk.id)
            everything = [
                (milk.id, "2026-11-22", "milk"),
                (bread.id, "2026-11-22", "bread"),
                (eggs.id, "2026-11-23", "eggs"),
            ]
            watched(everything)
            self.assertEqual(entries(), everything)
            self.assertEqual(entries("2026-11-22"), everything[:2])
            self.assertEqual(entries("2026-11-24"), [])

            updated = todo.UpdateEntry(
                todo_pb2.UpdateEntryRequest(
                    list=name, id=milk.id, title="oat milk", request_id=request_id()
                ),
                timeout=TIMEOUT,
            )
            self.assertEqual((updated.id, updated.date, updated.title), (milk.id, "2026-11-22", "oat milk"))
            watched([(milk.id, "2026-11-22", "oat milk")] + everything[1:])

            todo.DeleteEntry(
                todo_pb2.DeleteEntryRequest(list=name, id=bread.id, request_id=request_id()),
                timeout=TIMEOUT,
            )
            remaining = [(milk.id, "2026-11-22", "oat milk"), (eggs.id, "2026-11-23", "eggs")]
            watched(remaining)
            self.assertEqual(entries(), remaining)
        finally:
            watch.cancel()


class Errors(unittest.TestCase):
    """Each code of the README's error table that a healthy stack can be made to answer."""

    def setUp(self):
        self.servers = Servers.get()
        self.cart = self.servers.cart

    def start(self, key):
        return self.cart.StartSession(cart_pb2.StartSessionRequest(key=key), timeout=TIMEOUT)

    def test_invalid_argument_names_the_field(self):
        self.start("py-bad-input")
        expect_error(
            self,
            lambda: self.cart.AddItem(add_item("py-bad-input", "A", 1, 100, currency="usd"), timeout=TIMEOUT),
            Code.INVALID_ARGUMENT,
            "INVALID_FIELD",
            field="unit_price.currency_code",
        )

    def test_invalid_argument_for_an_empty_key(self):
        expect_error(
            self,
            lambda: self.cart.GetSession(cart_pb2.GetSessionRequest(key=""), timeout=TIMEOUT),
            Code.INVALID_ARGUMENT,
            "INVALID_FIELD",
            field="key",
        )

    def test_invalid_argument_for_a_request_id_reused_with_other_fields(self):
        self.start("py-reused-id")
        rid = request_id()
        self.cart.AddItem(add_item("py-reused-id", "A", 1, 100, rid), timeout=TIMEOUT)
        expect_error(
            self,
            lambda: self.cart.AddItem(add_item("py-reused-id", "A", 2, 100, rid), timeout=TIMEOUT),
            Code.INVALID_ARGUMENT,
            "INVALID_FIELD",
            field="request_id",
        )

    def test_not_found_for_a_session_never_started(self):
        expect_error(
            self,
            lambda: self.cart.GetSession(cart_pb2.GetSessionRequest(key="py-never-started"), timeout=TIMEOUT),
            Code.NOT_FOUND,
            "SESSION_NOT_FOUND",
        )

    def test_not_found_for_an_unknown_entry(self):
        todo = self.servers.todo
        todo.AddEntry(
            todo_pb2.AddEntryRequest(list="py-chores", date="2026-11-22", title="sweep", request_id=request_id()),
            timeout=TIMEOUT,
        )
        expect_error(
            self,
            lambda: todo.DeleteEntry(
                todo_pb2.DeleteEntryRequest(list="py-chores", id=999_999, request_id=request_id()),
                timeout=TIMEOUT,
            ),
            Code.NOT_FOUND,
            "ENTRY_NOT_FOUND",
        )

    def test_failed_precondition_after_checkout(self):
        key = "py-bought"
        self.start(key)
        self.cart.AddItem(add_item(key, "A", 1, 100), timeout=TIMEOUT)
        self.cart.Checkout(cart_pb2.CheckoutRequest(key=key, request_id=request_id()), timeout=TIMEOUT)
        expect_error(
            self,
            lambda: self.cart.AddItem(add_item(key, "A", 1, 100), timeout=TIMEOUT),
            Code.FAILED_PRECONDITION,
            "CART_CHECKED_OUT",
        )

    def test_aborted_on_a_version_conflict_at_the_store(self):
        store = self.servers.store

        def put(expected_version):
            return store.Put(
                store_pb2.PutRequest(
                    namespace="clients", key="py-conflict", value=b"v", expected_version=expected_version
                ),
                timeout=TIMEOUT,
            )

        self.assertEqual(put(0).version, 1)
        expect_error(
            self,
            lambda: put(0),
            Code.ABORTED,
            "VERSION_CONFLICT",
            domain=STORE_DOMAIN,
            metadata={"current_version": "1"},
        )

    def test_unauthenticated_without_the_admin_token(self):
        admin = self.servers.admin
        token = self.servers.admin_token
        self.assertTrue(token, "ADMIN_TOKEN is set by the Rust side")
        stats = admin.GetStats(
            admin_pb2.GetStatsRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=TIMEOUT
        )
        self.assertGreater(stats.uptime.seconds + stats.uptime.nanos, 0)
        expect_error(
            self,
            lambda: admin.GetStats(
                admin_pb2.GetStatsRequest(), metadata=[("authorization", "Bearer wrong")], timeout=TIMEOUT
            ),
            Code.UNAUTHENTICATED,
            "ADMIN_TOKEN_REQUIRED",
        )
        expect_error(
            self,
            lambda: admin.GetStats(admin_pb2.GetStatsRequest(), timeout=TIMEOUT),
            Code.UNAUTHENTICATED,
            "ADMIN_TOKEN_REQUIRED",
        )

    # INTERNAL is only for bugs (an actor's handler panicked): nothing sent from outside can
    # cause it, so it is not provoked here.


class WatcherLimit(unittest.TestCase):
    """session-svc runs with --max-watchers-per-key 1."""

    def test_resource_exhausted_with_retry_info(self):
        cart = Servers.get().cart
        key = "py-watched"
        cart.StartSession(cart_pb2.StartSessionRequest(key=key), timeout=TIMEOUT)
        first = cart.WatchSession(cart_pb2.WatchSessionRequest(key=key), timeout=60)
        try:
            self.assertEqual(next(first).key, key)
            second = cart.WatchSession(cart_pb2.WatchSessionRequest(key=key), timeout=TIMEOUT)
            try:
                expect_error(
                    self,
                    lambda: next(second),
                    Code.RESOURCE_EXHAUSTED,
                    "WATCHER_LIMIT",
                    retry_info=True,
                    message="--max-watchers-per-key",
                )
            finally:
                second.cancel()
        finally:
            first.cancel()


class AdminOff(unittest.TestCase):
    """session-svc runs without an admin token: the admin API is disabled."""

    def test_permission_denied(self):
        expect_error(
            self,
            lambda: Servers.get().admin.GetStats(
                admin_pb2.GetStatsRequest(), metadata=[("authorization", "Bearer anything")], timeout=TIMEOUT
            ),
            Code.PERMISSION_DENIED,
            "ADMIN_API_DISABLED",
        )


class StoreDown(unittest.TestCase):
    """store-svc was killed before this case runs."""

    def test_unavailable(self):
        expect_error(
            self,
            lambda: Servers.get().cart.StartSession(
                cart_pb2.StartSessionRequest(key="py-during-outage"), timeout=TIMEOUT
            ),
            Code.UNAVAILABLE,
            "STORE_UNAVAILABLE",
        )


LATE_KEY = "py-late"
LATE_REQUEST_ID = "py-late-b"


class ServerDeadline(unittest.TestCase):
    """session-svc runs with --default-deadline 1s; each case is run on its own, in order."""

    def test_1_prepare(self):
        """store-svc running: the cart exists and both skus' actors are live, so the calls
        of test_2 need nothing from the store but their own write."""
        cart = Servers.get().cart
        for key in (LATE_KEY, "py-warm-up"):
            cart.StartSession(cart_pb2.StartSessionRequest(key=key), timeout=TIMEOUT)
        cart.AddItem(add_item("py-warm-up", "held", 1, 100), timeout=TIMEOUT)
        cart.AddItem(add_item("py-warm-up", "late", 1, 100), timeout=TIMEOUT)
        got = cart.GetSession(cart_pb2.GetSessionRequest(key=LATE_KEY), timeout=TIMEOUT)
        self.assertEqual(len(got.items), 0)

    def test_2_server_deadline(self):
        """store-svc frozen: a first AddItem holds the cart's actor (its write waits on the
        store), and a second one, sent without a client deadline so that only the server's
        1 s default applies, waits in the mailbox until session-svc answers
        DEADLINE_EXCEEDED: it was never executed."""
        cart = Servers.get().cart
        held = {}

        def hold():
            try:
                held["reply"] = cart.AddItem(add_item(LATE_KEY, "held", 1, 100), timeout=3)
            except grpc.RpcError as error:
                held["error"] = error

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            time.sleep(0.5)  # the first AddItem reaches the actor and its write the store
            started = time.monotonic()
            error, _ = expect_error(
                self,
                # No timeout: grpcio then sends no grpc-timeout and never times out itself.
                lambda: cart.AddItem(add_item(LATE_KEY, "late", 1, 100, LATE_REQUEST_ID)),
                Code.DEADLINE_EXCEEDED,
                "DEADLINE_EXCEEDED",
            )
            self.assertLess(time.monotonic() - started, 3, "answered at the 1 s default deadline")
        finally:
            holder.join()
        # The held write may have gone either way (it reached the frozen store); not checked.

    def test_3_not_applied(self):
        """store-svc thawed: the late AddItem was not applied; retried with the same request
        id, it is."""
        cart = Servers.get().cart
        deadline = time.monotonic() + 20
        while True:
            try:
                got = cart.GetSession(cart_pb2.GetSessionRequest(key=LATE_KEY), timeout=TIMEOUT)
                break
            except grpc.RpcError as error:
                if error.code() != Code.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.assertEqual(quantity_of(got, "late"), 0, "a server-sent DEADLINE_EXCEEDED was applied")
        retried = cart.AddItem(add_item(LATE_KEY, "late", 1, 100, LATE_REQUEST_ID), timeout=TIMEOUT)
        self.assertEqual(quantity_of(retried, "late"), 1)


if __name__ == "__main__":
    unittest.main()
