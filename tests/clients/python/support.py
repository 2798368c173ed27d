"""What every case of the Python client suite shares: where the servers are, the generated
stubs, request helpers, and expect_error, the one place that reads the error contract.

The stubs are generated from proto/ by .ci/clients.sh (python -m grpc_tools.protoc) into
.cache/clients/python-gen, which the Rust side puts on PYTHONPATH. The Rust side
(tests/tests/clients_python.rs) also starts the servers and passes their addresses:
SESSION_ADDR, STORE_ADDR and ADMIN_TOKEN.
"""

import os
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from session.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cart_pb2,
    cart_pb2_grpc,
    money_pb2,
    todo_pb2,
    todo_pb2_grpc,
)
from store.v1 import store_pb2, store_pb2_grpc

# Every call's deadline unless a case says otherwise: a hang fails, a slow machine does not.
TIMEOUT = 10.0

# ErrorInfo.domain of each server's errors.
SESSION_DOMAIN = "session.v1"
STORE_DOMAIN = "store.v1"


def env(name):
    """The environment variable `name`, which the Rust side sets."""
    value = os.environ.get(name)
    if value is None:
        raise SystemExit(
            f"{name} is not set: run this suite through `cargo test -p tests --test "
            "clients_python`, which starts the servers and sets it"
        )
    return value


class Servers:
    """Channels and stubs to the servers under test, opened once per process."""

    _opened = None

    def __init__(self):
        self.session_channel = grpc.insecure_channel(env("SESSION_ADDR"))
        self.store_channel = grpc.insecure_channel(env("STORE_ADDR"))
        self.cart = cart_pb2_grpc.CartServiceStub(self.session_channel)
        self.todo = todo_pb2_grpc.TodoServiceStub(self.session_channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.session_channel)
        self.store = store_pb2_grpc.StoreServiceStub(self.store_channel)
        self.admin_token = os.environ.get("ADMIN_TOKEN", "")

    @classmethod
    def get(cls):
        if cls._opened is None:
            cls._opened = cls()
        return cls._opened


def request_id():
    """A fresh request id: the README asks for one on every mutation, reused on a retry."""
    return f"py-{uuid.uuid4()}"


def usd(minor_units):
    return money_pb2.Money(currency_code="USD", minor_units=minor_units)


def add_item(key, sku, quantity, cents, rid=None, currency="USD"):
    """An AddItemRequest with a fresh request id unless `rid` is given."""
    return cart_pb2.AddItemRequest(
        key=key,
        sku=sku,
        name=f"product {sku}",
        quantity=quantity,
        unit_price=money_pb2.Money(currency_code=currency, minor_units=cents),
        request_id=rid or request_id(),
    )


def quantity_of(session, sku):
    return sum(item.quantity for item in session.items if item.sku == sku)


DETAIL_TYPES = {
    "BadRequest": error_details_pb2.BadRequest,
    "ErrorInfo": error_details_pb2.ErrorInfo,
    "RetryInfo": error_details_pb2.RetryInfo,
}


def details_of(error):
    """The google.rpc.Status of a failed call, decoded from its grpc-status-details-bin
    trailer, and its details by type name (BadRequest, ErrorInfo, RetryInfo)."""
    status = rpc_status.from_call(error)  # None when the trailer is absent
    details = {}
    if status is not None:
        for any_detail in status.details:
            for name, detail_type in DETAIL_TYPES.items():
                if any_detail.Is(detail_type.DESCRIPTOR):
                    detail = detail_type()
                    any_detail.Unpack(detail)
                    details[name] = detail
    return status, details


def expect_error(
    test,
    call,
    code,
    reason,
    *,
    domain=SESSION_DOMAIN,
    field=None,
    retry_info=False,
    metadata=None,
    message=None,
):
    """Runs `call` (no arguments), which must fail with `code`, and checks what the error
    contract says comes with it:

    - `field`: a google.rpc.BadRequest naming this field;
    - `retry_info`: a google.rpc.RetryInfo;
    - `message`: text the status message contains;
    - always a google.rpc.ErrorInfo with `reason` and `domain`, and `metadata` among its
      metadata. Checked last, so every other expectation is checked first.

    Returns the error and its decoded details."""
    try:
        result = call()
    except grpc.RpcError as failed:
        error = failed
    else:
        test.fail(f"expected {code.name} ({reason}), got OK: {result}")
    what = f"{error.code().name}: {error.details()!r}"
    test.assertEqual(error.code(), code, f"expected {code.name} ({reason}), got {what}")
    if message is not None:
        test.assertIn(message, error.details(), what)
    status, details = details_of(error)
    if status is not None:
        test.assertEqual(status.code, code.value[0], f"grpc-status-details-bin of {what}")
    if field is not None:
        bad_request = details.get("BadRequest")
        test.assertIsNotNone(bad_request, f"no google.rpc.BadRequest in {what}")
        fields = [violation.field for violation in bad_request.field_violations]
        test.assertIn(field, fields, f"BadRequest of {what}")
    if retry_info:
        test.assertIn("RetryInfo", details, f"no google.rpc.RetryInfo in {what}")
    info = details.get("ErrorInfo")
    test.assertIsNotNone(
        info, f"no google.rpc.ErrorInfo in {what} (expected reason {reason}, domain {domain})"
    )
    test.assertEqual((info.reason, info.domain), (reason, domain), f"ErrorInfo of {what}")
    for name, value in (metadata or {}).items():
        test.assertEqual(info.metadata.get(name), value, f"ErrorInfo.metadata[{name!r}] of {what}")
    return error, details


__all__ = [
    "STORE_DOMAIN",
    "SESSION_DOMAIN",
    "TIMEOUT",
    "Servers",
    "add_item",
    "admin_pb2",
    "cart_pb2",
    "details_of",
    "expect_error",
    "quantity_of",
    "request_id",
    "store_pb2",
    "todo_pb2",
    "usd",
]
