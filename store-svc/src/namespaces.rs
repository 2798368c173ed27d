//! The namespaces a store serves: configuration, never caller input.
//!
//! Each namespace is a sled tree, and sled never drops one, so a store that created a tree for
//! every name a caller sent could be filled with junk trees by anyone who can reach it (999
//! Puts to `junk-N` once locked session-svc out for good). The operator lists the namespaces
//! instead (`--namespaces`); their trees are opened at start-up, and a request naming any
//! other is INVALID_ARGUMENT before it reaches the database.

use std::{fmt, str::FromStr};

use kit::echo::echo;

use crate::{error::Error, validate};

/// The namespaces session-svc reads and writes, comma-separated: `--namespaces`' default.
/// The `tests` crate checks that it equals session-svc's own list (`STORE_NAMESPACES`).
pub const DEFAULT_NAMESPACES: &str = "cart,cart_events,orders,todo,todo_entries,sku,reservations,reminders,archive,sweeper,jobs,job_entries,cluster";

/// How many namespaces an error message or log line names, at most, before it says how many
/// more: up to 16, and no more than about 200 bytes of them.
const LISTED: usize = 16;
/// See [`LISTED`].
const LISTED_BYTES: usize = 200;

/// The configured namespaces, in the order configured, each valid and named once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces(Vec<String>);

impl Namespaces {
    /// The namespaces of a comma-separated list (blanks around names ignored): at least one,
    /// each following the namespace rule, none twice. The error says which name is wrong.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut names: Vec<String> = Vec::new();
        for name in list.split(',').map(str::trim) {
            if let Err(Error::InvalidArgument { description, .. }) = validate::namespace(name) {
                return Err(format!("namespace {description}"));
            }
            if names.iter().any(|known| known == name) {
                return Err(format!("namespace {} is listed twice", echo(name)));
            }
            names.push(name.to_owned());
        }
        Ok(Self(names))
    }

    /// The namespaces, in the order configured.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// True when `namespace` is one of them.
    pub fn contains(&self, namespace: &str) -> bool {
        self.0.iter().any(|known| known == namespace)
    }

    /// Logs a warning naming the namespaces of `stored` (what `place` holds) that are not
    /// configured: they are not served, and their data is kept. Silent when there are none.
    pub fn warn_unserved(&self, stored: impl IntoIterator<Item = String>, place: &str) {
        let unserved: Vec<String> = stored
            .into_iter()
            .filter(|namespace| !self.contains(namespace))
            .collect();
        if !unserved.is_empty() {
            tracing::warn!(
                count = unserved.len(),
                namespaces = %listing(unserved.iter().map(String::as_str), unserved.len()),
                "{place} holds namespaces that are not configured: they are not served, and \
                 their data is kept; add them to --namespaces to serve them again"
            );
        }
    }

    /// Accepts a namespace this store serves. Anything else is INVALID_ARGUMENT naming the
    /// `namespace` field: a malformed name with the naming rule, a well-formed one with the
    /// list of namespaces served.
    pub fn check(&self, namespace: &str) -> Result<(), Error> {
        validate::namespace(namespace)?;
        if self.contains(namespace) {
            return Ok(());
        }
        Err(Error::invalid(
            "namespace",
            format!(
                "{} is not served by this store; it serves {self} (store-svc --namespaces)",
                echo(namespace)
            ),
        ))
    }
}

impl Default for Namespaces {
    /// [`DEFAULT_NAMESPACES`].
    fn default() -> Self {
        Self::parse(DEFAULT_NAMESPACES).expect("the default namespaces are valid")
    }
}

impl FromStr for Namespaces {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        Self::parse(list)
    }
}

impl fmt::Display for Namespaces {
    /// The namespaces comma-separated, the first few of a long list and how many more.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", listing(self.iter(), self.0.len()))
    }
}

/// The first of `names` (see [`LISTED`]) quoted and comma-separated, then `and N more` when
/// `total` is larger: bounded, however many there are.
pub fn listing<'a>(names: impl Iterator<Item = &'a str>, total: usize) -> String {
    let mut text = String::new();
    let mut shown = 0;
    for name in names.take(LISTED) {
        if shown > 0 && text.len() + name.len() > LISTED_BYTES {
            break;
        }
        if shown > 0 {
            text.push_str(", ");
        }
        text.push_str(&echo(name).to_string());
        shown += 1;
    }
    if total > shown {
        text.push_str(&format!(" and {} more", total - shown));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_in_order_ignoring_blanks_around_names() {
        let namespaces = Namespaces::parse(" cart, orders ,todo").unwrap();
        assert_eq!(
            namespaces.iter().collect::<Vec<_>>(),
            ["cart", "orders", "todo"]
        );
        assert!(namespaces.contains("orders"));
        assert!(!namespaces.contains("order"));
    }

    #[test]
    fn the_default_is_session_svcs_namespaces() {
        let namespaces = Namespaces::default();
        assert_eq!(
            namespaces.iter().collect::<Vec<_>>(),
            [
                "cart",
                "cart_events",
                "orders",
                "todo",
                "todo_entries",
                "sku",
                "reservations",
                "reminders",
                "archive",
                "sweeper",
                "jobs",
                "job_entries",
                "cluster"
            ]
        );
    }

    #[test]
    fn bad_lists_are_refused_saying_why() {
        for (list, why) in [
            ("", "1 to 64 characters"),
            ("cart,", "1 to 64 characters"),
            ("cart,,orders", "1 to 64 characters"),
            ("Cart", "[a-z0-9_-]"),
            ("a/b", "[a-z0-9_-]"),
            ("cart,orders,cart", "\"cart\" is listed twice"),
        ] {
            let error = Namespaces::parse(list).unwrap_err();
            assert!(error.contains(why), "{list:?}: {error}");
        }
    }

    #[test]
    fn an_unserved_namespace_is_invalid_and_the_served_ones_are_listed() {
        let namespaces = Namespaces::parse("cart,orders").unwrap();
        assert!(namespaces.check("cart").is_ok());
        match namespaces.check("junk-1") {
            Err(Error::InvalidArgument { field, description }) => {
                assert_eq!(field, "namespace");
                assert!(description.contains("\"junk-1\""), "{description}");
                assert!(
                    description.contains("\"cart\", \"orders\""),
                    "{description}"
                );
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let huge = "\u{1}".repeat(3 << 20);
        match namespaces.check(&huge) {
            Err(Error::InvalidArgument { field, description }) => {
                assert_eq!(field, "namespace");
                assert!(description.len() < 1024, "{} bytes", description.len());
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_long_list_is_named_in_part() {
        let list: Vec<String> = (0..100).map(|i| format!("ns-{i}")).collect();
        let namespaces = Namespaces::parse(&list.join(",")).unwrap();
        let shown = namespaces.to_string();
        assert!(shown.starts_with("\"ns-0\", \"ns-1\""), "{shown}");
        assert!(shown.ends_with(" and 84 more"), "{shown}");
        let long: Vec<String> = (0..20).map(|i| format!("{i:0>64}")).collect();
        let shown = Namespaces::parse(&long.join(",")).unwrap().to_string();
        assert!(shown.len() < 300, "{} bytes: {shown}", shown.len());
        assert!(shown.ends_with(" and 17 more"), "{shown}");
    }
}
