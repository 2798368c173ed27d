use super::super::ErrorKind;
use super::super::discount::DiscountKind;
use super::super::text::TextError;
use super::*;

const T0: i64 = 1_700_000_000_000;

fn ctx(now_ms: i64) -> Ctx {
    Ctx {
        now_ms,
        log_limit: 100,
    }
}

fn usd(minor_units: i64) -> Money {
    Money::new(Currency::parse("USD").unwrap(), minor_units)
}

fn eur(minor_units: i64) -> Money {
    Money::new(Currency::parse("EUR").unwrap(), minor_units)
}

fn pct(code: &str, basis_points: u32) -> Discount {
    Discount::new(code, DiscountKind::Percentage { basis_points }).unwrap()
}

fn fixed(code: &str, minor_units: i64) -> Discount {
    Discount::new(code, DiscountKind::Fixed { minor_units }).unwrap()
}

fn args() -> StartArgs {
    StartArgs {
        key: "k1".into(),
        domain: "shop.example".into(),
        landing: "/sale".into(),
        ip: "203.0.113.7".into(),
        member_id: "m42".into(),
    }
}

fn cart() -> Cart {
    Cart::start(args(), &ctx(T0)).unwrap()
}

fn add(cart: &mut Cart, sku: &str, quantity: u32, price: Money) -> Result<(), CartError> {
    cart.add_item(
        sku.into(),
        format!("{sku} name"),
        quantity,
        price,
        &ctx(T0 + 1),
    )
}

fn events(cart: &Cart) -> Vec<&str> {
    cart.logs.iter().map(|l| l.event.as_str()).collect()
}

fn quantities(cart: &Cart) -> Vec<(&str, u32)> {
    cart.items
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity))
        .collect()
}

/// Each of the closing moves, so tests can check all three terminal states.
fn closed_carts() -> Vec<Cart> {
    let mut checked_out = cart();
    add(&mut checked_out, "A", 1, usd(100)).unwrap();
    checked_out.checkout("o1".into(), &ctx(T0 + 2)).unwrap();
    let mut ended = cart();
    ended.end(&ctx(T0 + 2)).unwrap();
    let mut expired = cart();
    expired.expire(&ctx(T0 + 2)).unwrap();
    vec![checked_out, ended, expired]
}

#[test]
fn start_opens_an_active_empty_cart_and_logs_started() {
    let c = cart();
    assert_eq!(c.key, "k1");
    assert_eq!(
        (c.domain.as_str(), c.landing.as_str()),
        ("shop.example", "/sale")
    );
    assert_eq!(
        (c.ip.as_str(), c.member_id.as_str()),
        ("203.0.113.7", "m42")
    );
    assert!(c.is_active() && c.items.is_empty() && c.discounts.is_empty());
    assert_eq!((c.created_at_ms, c.updated_at_ms), (T0, T0));
    assert_eq!((c.order_id.clone(), c.currency), (None, None));
    assert_eq!(events(&c), ["started"]);
    assert_eq!(
        c.logs[0].detail,
        "domain=shop.example landing=/sale ip=203.0.113.7 member_id=m42"
    );
}

#[test]
fn guests_start_with_only_a_key() {
    let c = Cart::start(
        StartArgs {
            key: "k".into(),
            ..StartArgs::default()
        },
        &ctx(T0),
    )
    .unwrap();
    assert_eq!(c.member_id, "");
}

#[test]
fn start_refuses_bad_fields_naming_them() {
    type Spoil = fn(&mut StartArgs);
    let cases: [(Spoil, &str); 6] = [
        (|a| a.key = String::new(), "key"),
        (|a| a.key = "k".repeat(257), "key"),
        (|a| a.domain = "a\nb".into(), "domain"),
        (|a| a.landing = "/".repeat(2049), "landing"),
        (|a| a.ip = "1".repeat(65), "ip"),
        (|a| a.member_id = "\u{0}".into(), "member_id"),
    ];
    for (spoil, field) in cases {
        let mut a = args();
        spoil(&mut a);
        let err = Cart::start(a, &ctx(T0)).unwrap_err();
        assert_eq!(err.field(), Some(field));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}

#[test]
fn same_sku_adds_up() {
    let mut c = cart();
    add(&mut c, "A", 2, usd(1999)).unwrap();
    add(&mut c, "A", 3, usd(1999)).unwrap();
    assert_eq!(quantities(&c), [("A", 5)]);
}

#[test]
fn a_hundred_single_adds_make_a_hundred() {
    let mut c = cart();
    for _ in 0..100 {
        add(&mut c, "A", 1, usd(1)).unwrap();
    }
    assert_eq!(quantities(&c), [("A", 100)]);
}

#[test]
fn lines_keep_the_order_first_added() {
    let mut c = cart();
    for sku in ["C", "A", "B", "A"] {
        add(&mut c, sku, 1, usd(10)).unwrap();
    }
    assert_eq!(quantities(&c), [("C", 1), ("A", 2), ("B", 1)]);
    c.remove_item("C", 1, &ctx(T0)).unwrap();
    assert_eq!(quantities(&c), [("A", 2), ("B", 1)]);
}

#[test]
fn same_sku_keeps_its_first_name() {
    let mut c = cart();
    c.add_item("A".into(), "Mug".into(), 1, usd(5), &ctx(T0))
        .unwrap();
    c.add_item("A".into(), "Cup".into(), 1, usd(5), &ctx(T0))
        .unwrap();
    assert_eq!(c.line("A").unwrap().name, "Mug");
}

#[test]
fn first_item_fixes_the_currency() {
    let mut c = cart();
    add(&mut c, "A", 1, eur(100)).unwrap();
    assert_eq!(c.currency, Some(eur(0).currency));
}

#[test]
fn mixed_currency_is_refused() {
    let mut c = cart();
    add(&mut c, "A", 1, usd(100)).unwrap();
    let before = c.clone();
    let err = add(&mut c, "B", 1, eur(100)).unwrap_err();
    assert_eq!(
        err,
        CartError::CurrencyMismatch {
            cart: usd(0).currency,
            item: eur(0).currency
        }
    );
    assert_eq!(err.field(), Some("unit_price.currency_code"));
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(c, before);
}

#[test]
fn currency_stays_after_the_cart_empties() {
    let mut c = cart();
    add(&mut c, "A", 1, usd(100)).unwrap();
    c.remove_item("A", 1, &ctx(T0)).unwrap();
    assert!(matches!(
        add(&mut c, "B", 1, eur(1)),
        Err(CartError::CurrencyMismatch { .. })
    ));
    let t = c.totals().unwrap().unwrap();
    assert_eq!((t.subtotal, t.total), (usd(0), usd(0)));
}

#[test]
fn same_sku_at_another_price_is_refused() {
    let mut c = cart();
    add(&mut c, "A", 1, usd(100)).unwrap();
    let err = add(&mut c, "A", 1, usd(90)).unwrap_err();
    assert_eq!(
        err,
        CartError::PriceMismatch {
            sku: "A".into(),
            line: usd(100),
            item: usd(90)
        }
    );
    assert_eq!(err.field(), Some("unit_price.minor_units"));
    assert_eq!(quantities(&c), [("A", 1)]);
}

#[test]
fn zero_quantity_is_refused() {
    let mut c = cart();
    let err = add(&mut c, "A", 0, usd(1)).unwrap_err();
    assert_eq!(
        (err.clone(), err.field()),
        (CartError::QuantityTooSmall, Some("quantity"))
    );
    add(&mut c, "A", 1, usd(1)).unwrap();
    assert_eq!(
        c.remove_item("A", 0, &ctx(T0)),
        Err(CartError::QuantityTooSmall)
    );
}

#[test]
fn negative_price_is_refused_but_free_items_are_fine() {
    let mut c = cart();
    let err = add(&mut c, "A", 1, usd(-1)).unwrap_err();
    assert_eq!(
        (err.clone(), err.field()),
        (CartError::NegativePrice, Some("unit_price.minor_units"))
    );
    assert_eq!(c.currency, None, "a refused item fixes no currency");
    add(&mut c, "FREE", 1, usd(0)).unwrap();
}

#[test]
fn quantity_per_line_is_capped() {
    let mut c = cart();
    add(&mut c, "A", MAX_QUANTITY, usd(1)).unwrap();
    assert_eq!(
        add(&mut c, "A", 1, usd(1)),
        Err(CartError::QuantityTooLarge {
            total: u64::from(MAX_QUANTITY) + 1
        })
    );
    assert_eq!(
        add(&mut c, "B", u32::MAX, usd(1)),
        Err(CartError::QuantityTooLarge {
            total: u64::from(u32::MAX)
        })
    );
    assert_eq!(quantities(&c), [("A", MAX_QUANTITY)]);
}

#[test]
fn distinct_lines_are_capped() {
    let mut c = cart();
    for i in 0..MAX_LINES {
        add(&mut c, &format!("S{i}"), 1, usd(1)).unwrap();
    }
    let err = add(&mut c, "ONE-MORE", 1, usd(1)).unwrap_err();
    assert_eq!(
        (err.clone(), err.kind()),
        (CartError::TooManyLines, ErrorKind::FailedPrecondition)
    );
    // An existing line can still grow.
    add(&mut c, "S0", 1, usd(1)).unwrap();
    assert_eq!(c.items.len(), MAX_LINES);
}

#[test]
fn total_that_would_overflow_is_refused() {
    let mut c = cart();
    add(&mut c, "A", 1, usd(i64::MAX - 10)).unwrap();
    assert_eq!(add(&mut c, "B", 1, usd(11)), Err(CartError::Overflow));
    assert_eq!(
        add(&mut c, "C", 2, usd(i64::MAX / 2)),
        Err(CartError::Overflow)
    );
    add(&mut c, "D", 1, usd(10)).unwrap();
    assert_eq!(c.totals().unwrap().unwrap().subtotal, usd(i64::MAX));
}

#[test]
fn bad_sku_and_name_are_refused_naming_the_field() {
    let mut c = cart();
    let cases = [
        ("", "n", "sku"),
        (&*"s".repeat(65), "n", "sku"),
        ("a\tb", "n", "sku"),
        ("s", "", "name"),
        ("s", &*"n".repeat(257), "name"),
        ("s", "x\u{1b}[31m", "name"),
    ];
    for (sku, name, field) in cases {
        let err = c
            .add_item(sku.into(), name.into(), 1, usd(1), &ctx(T0))
            .unwrap_err();
        assert!(matches!(err, CartError::Text(_)), "{err:?}");
        assert_eq!(err.field(), Some(field), "{sku:?} {name:?}");
    }
    c.add_item("s".repeat(64), "n".repeat(256), 1, usd(1), &ctx(T0))
        .unwrap();
    assert_eq!(events(&c), ["started", "item_added"]);
}

#[test]
fn item_added_is_logged_with_details() {
    let mut c = cart();
    add(&mut c, "A1", 2, usd(1999)).unwrap();
    let last = c.logs.back().unwrap();
    assert_eq!((last.at_ms, last.event.as_str()), (T0 + 1, "item_added"));
    assert_eq!(
        last.detail,
        "sku=A1 quantity=2 unit_price=1999 currency=USD line_quantity=2"
    );
}

#[test]
fn remove_takes_units_off_the_line() {
    let mut c = cart();
    add(&mut c, "A", 5, usd(1)).unwrap();
    assert_eq!(c.remove_item("A", 2, &ctx(T0 + 9)), Ok(2));
    assert_eq!(quantities(&c), [("A", 3)]);
    let last = c.logs.back().unwrap();
    assert_eq!(
        (last.event.as_str(), last.detail.as_str()),
        ("item_removed", "sku=A quantity=2 line_quantity=3")
    );
    assert_eq!(c.updated_at_ms, T0 + 9);
}

#[test]
fn removing_to_zero_removes_the_line() {
    let mut c = cart();
    add(&mut c, "A", 2, usd(1)).unwrap();
    assert_eq!(c.remove_item("A", 2, &ctx(T0)), Ok(2));
    assert!(c.items.is_empty());
}

#[test]
fn removing_more_than_present_removes_the_line() {
    let mut c = cart();
    add(&mut c, "A", 2, usd(1)).unwrap();
    assert_eq!(c.remove_item("A", 1000, &ctx(T0)), Ok(2));
    assert!(c.line("A").is_none());
    assert_eq!(
        c.logs.back().unwrap().detail,
        "sku=A quantity=2 line_quantity=0"
    );
}

#[test]
fn removing_an_unknown_sku_is_not_found() {
    let mut c = cart();
    let before = c.clone();
    let err = c.remove_item("NOPE", 1, &ctx(T0)).unwrap_err();
    assert_eq!(err, CartError::SkuNotInCart { sku: "NOPE".into() });
    assert_eq!(
        (err.kind(), err.field()),
        (ErrorKind::NotFound, Some("sku"))
    );
    assert_eq!(c, before);
    assert_eq!(
        c.remove_item("", 1, &ctx(T0)).unwrap_err().field(),
        Some("sku")
    );
}

#[test]
fn totals_are_none_until_an_item_fixes_the_currency() {
    let mut c = cart();
    c.apply_discount(fixed("F", 500), &ctx(T0)).unwrap();
    assert_eq!(c.totals(), Ok(None));
}

#[test]
fn applied_discounts_change_the_totals() {
    let mut c = cart();
    add(&mut c, "A", 2, usd(1000)).unwrap();
    assert_eq!(
        c.apply_discount(pct("SAVE10", 1000), &ctx(T0 + 5)),
        Ok(true)
    );
    assert_eq!(
        c.apply_discount(fixed("FIVEOFF", 500), &ctx(T0 + 6)),
        Ok(true)
    );
    let t = c.totals().unwrap().unwrap();
    assert_eq!(
        (t.subtotal, t.discount_total, t.total),
        (usd(2000), usd(700), usd(1300))
    );
    let last = c.logs.back().unwrap();
    assert_eq!(
        (last.event.as_str(), last.detail.as_str()),
        ("discount_applied", "code=FIVEOFF kind=fixed value=500")
    );
}

#[test]
fn applying_the_same_code_twice_changes_nothing() {
    let mut c = cart();
    assert_eq!(
        c.apply_discount(pct("SAVE10", 1000), &ctx(T0 + 1)),
        Ok(true)
    );
    let before = c.clone();
    assert_eq!(
        c.apply_discount(pct("SAVE10", 1000), &ctx(T0 + 2)),
        Ok(false)
    );
    // Even if the catalog changed the code's value in between, the first application stands.
    assert_eq!(
        c.apply_discount(pct("SAVE10", 5000), &ctx(T0 + 3)),
        Ok(false)
    );
    assert_eq!(c, before, "no new log entry, no new timestamp");
}

#[test]
fn discounts_per_cart_are_capped() {
    let mut c = cart();
    for i in 0..MAX_DISCOUNTS {
        c.apply_discount(fixed(&format!("C{i}"), 1), &ctx(T0))
            .unwrap();
    }
    assert_eq!(
        c.apply_discount(fixed("MORE", 1), &ctx(T0)),
        Err(CartError::TooManyDiscounts)
    );
    assert_eq!(c.apply_discount(fixed("C0", 1), &ctx(T0)), Ok(false));
}

#[test]
fn an_out_of_range_discount_is_refused() {
    let mut c = cart();
    let bad = Discount {
        code: "X".into(),
        kind: DiscountKind::Percentage {
            basis_points: 20_000,
        },
    };
    assert_eq!(
        c.apply_discount(bad, &ctx(T0)).unwrap_err().field(),
        Some("code")
    );
    assert!(c.discounts.is_empty());
}

#[test]
fn checkout_makes_an_order_with_everything_tracked() {
    let mut c = cart();
    add(&mut c, "A", 2, usd(1999)).unwrap();
    c.apply_discount(pct("SAVE10", 1000), &ctx(T0 + 2)).unwrap();
    let order = c.checkout("ord-1".into(), &ctx(T0 + 3)).unwrap();
    assert_eq!(order.order_id, "ord-1");
    assert_eq!(order.session_key, "k1");
    assert_eq!(order.items, c.items);
    assert_eq!(order.discounts, c.discounts);
    // 10 % of 3998 is 399.8, rounded down.
    assert_eq!(
        (order.subtotal, order.discount_total, order.total),
        (usd(3998), usd(399), usd(3599))
    );
    assert_eq!(
        (order.domain.as_str(), order.landing.as_str()),
        ("shop.example", "/sale")
    );
    assert_eq!(
        (order.ip.as_str(), order.member_id.as_str()),
        ("203.0.113.7", "m42")
    );
    assert_eq!(order.created_at_ms, T0 + 3);
    let logged: Vec<&str> = order.logs.iter().map(|l| l.event.as_str()).collect();
    assert_eq!(
        logged,
        ["started", "item_added", "discount_applied", "checked_out"]
    );
    assert_eq!(
        order.logs.last().unwrap().detail,
        "order_id=ord-1 total=3599 currency=USD"
    );
    assert_eq!(c.status, CartStatus::CheckedOut);
    assert_eq!(c.order_id.as_deref(), Some("ord-1"));
}

#[test]
fn empty_cart_cannot_check_out() {
    let mut c = cart();
    let err = c.checkout("o".into(), &ctx(T0)).unwrap_err();
    assert_eq!(
        (err.clone(), err.kind()),
        (CartError::EmptyCart, ErrorKind::FailedPrecondition)
    );
    // Emptied after adding: still empty.
    add(&mut c, "A", 1, usd(1)).unwrap();
    c.remove_item("A", 1, &ctx(T0)).unwrap();
    assert_eq!(c.checkout("o".into(), &ctx(T0)), Err(CartError::EmptyCart));
    assert!(c.is_active());
}

#[test]
fn checkout_needs_a_sane_order_id() {
    let mut c = cart();
    add(&mut c, "A", 1, usd(1)).unwrap();
    let err = c.checkout(String::new(), &ctx(T0)).unwrap_err();
    assert_eq!(err, CartError::Text(TextError::Blank { field: "order_id" }));
    assert!(c.is_active());
}

#[test]
fn checked_out_cart_refuses_changes() {
    let mut c = closed_carts().swap_remove(0);
    let before = c.clone();
    let refused = CartError::NotActive(CartStatus::CheckedOut);
    assert_eq!(add(&mut c, "A", 1, usd(100)), Err(refused.clone()));
    assert_eq!(c.remove_item("A", 1, &ctx(T0)), Err(refused.clone()));
    assert_eq!(
        c.apply_discount(pct("P", 1), &ctx(T0)),
        Err(refused.clone())
    );
    assert_eq!(c.checkout("o2".into(), &ctx(T0)), Err(refused.clone()));
    assert_eq!(c.end(&ctx(T0)), Err(refused.clone()));
    assert_eq!(c.expire(&ctx(T0)), Err(refused.clone()));
    assert_eq!(refused.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(c, before);
}

#[test]
fn ended_and_expired_carts_refuse_changes() {
    for mut c in closed_carts() {
        let status = c.status;
        assert_eq!(
            add(&mut c, "B", 1, usd(1)),
            Err(CartError::NotActive(status))
        );
        assert_eq!(c.end(&ctx(T0)), Err(CartError::NotActive(status)));
        assert_eq!(c.expire(&ctx(T0)), Err(CartError::NotActive(status)));
        // Reading still works: a closed cart is a record.
        assert!(c.totals().is_ok());
    }
}

#[test]
fn end_and_expire_close_the_cart_and_log_it() {
    let [_, ended, expired] = <[Cart; 3]>::try_from(closed_carts()).unwrap();
    assert_eq!(
        (ended.status, events(&ended)),
        (CartStatus::Ended, vec!["started", "ended"])
    );
    assert_eq!(
        (expired.status, events(&expired)),
        (CartStatus::Expired, vec!["started", "expired"])
    );
    assert_eq!(ended.updated_at_ms, T0 + 2);
    assert_eq!(ended.order_id, None);
}

#[test]
fn log_keeps_the_last_n_entries() {
    let mut c = cart();
    let small = Ctx {
        now_ms: T0,
        log_limit: 3,
    };
    for i in 0..10u32 {
        c.add_item(
            "A".into(),
            "a".into(),
            1,
            usd(1),
            &Ctx {
                now_ms: T0 + i64::from(i),
                ..small
            },
        )
        .unwrap();
    }
    assert_eq!(c.logs.len(), 3);
    let times: Vec<i64> = c.logs.iter().map(|l| l.at_ms).collect();
    assert_eq!(times, [T0 + 7, T0 + 8, T0 + 9], "oldest dropped first");
}

#[test]
fn a_zero_log_limit_keeps_no_logs() {
    let none = Ctx {
        now_ms: T0,
        log_limit: 0,
    };
    let mut c = Cart::start(args(), &none).unwrap();
    c.end(&none).unwrap();
    assert!(c.logs.is_empty());
}

#[test]
fn failed_operations_log_nothing() {
    let mut c = cart();
    add(&mut c, "A", 1, usd(1)).unwrap();
    let before = c.clone();
    let _ = add(&mut c, "A", 0, usd(1));
    let _ = add(&mut c, "B", 1, eur(1));
    let _ = c.remove_item("Z", 1, &ctx(T0 + 50));
    let _ = c.checkout(String::new(), &ctx(T0 + 50));
    assert_eq!(c, before);
}

#[test]
fn idle_time_counts_from_the_last_change() {
    let mut c = cart();
    add(&mut c, "A", 1, usd(1)).unwrap();
    assert_eq!(c.idle_ms(T0 + 1 + 60_000), 60_000);
    assert_eq!(
        c.idle_ms(T0 - 5),
        0,
        "a clock stepping back is not negative idleness"
    );
}

#[test]
fn status_reads_in_lowercase() {
    let shown: Vec<String> = [
        CartStatus::Active,
        CartStatus::CheckedOut,
        CartStatus::Ended,
        CartStatus::Expired,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(shown, ["active", "checked out", "ended", "expired"]);
}

#[test]
fn wire_quantities_must_be_positive() {
    assert_eq!(parse_quantity(1), Ok(1));
    assert_eq!(parse_quantity(i32::MAX), Ok(i32::MAX as u32));
    for bad in [0, -1, i32::MIN] {
        assert_eq!(parse_quantity(bad), Err(CartError::QuantityTooSmall));
    }
}
