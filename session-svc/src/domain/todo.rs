//! Seed 004's `Todo.List`: a named list of dated entries with ids that are never reused.
//!
//! Pure data, like the book's module: the actor owns one list and persists it after each
//! successful change. A failed operation leaves the list untouched.

use std::collections::BTreeMap;

use thiserror::Error;

use super::ErrorKind;
use super::date::{Date, DateError};
use super::text::{self, MAX_KEY_BYTES, MAX_TITLE_BYTES, TextError};

/// Most entries in one list, so no list grows without bound.
pub const MAX_ENTRIES: usize = 10_000;

/// One to-do item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Assigned by the list, from 1; stays valid as a handle because ids are never reused.
    pub id: u64,
    /// The day it is due.
    pub date: Date,
    /// What to do: not blank, at most 1,000 bytes, one line.
    pub title: String,
}

/// A named to-do list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoList {
    /// The list's name, which is also its registry key.
    pub name: String,
    /// Entries by id; a BTreeMap so ties on a date come out in id (creation) order.
    pub entries: BTreeMap<u64, Entry>,
    /// The id the next entry gets; only ever grows, so a deleted id never comes back.
    pub next_id: u64,
}

/// A refused to-do operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TodoError {
    /// The list name or the title is blank, too long or has control characters.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The date is not a valid `YYYY-MM-DD` calendar date.
    #[error(transparent)]
    Date(#[from] DateError),
    /// No entry has this id (never had, or it was deleted).
    #[error("entry {id} does not exist")]
    EntryNotFound {
        /// The id asked for.
        id: u64,
    },
    /// The list already holds [`MAX_ENTRIES`] entries.
    #[error("the list already has {MAX_ENTRIES} entries")]
    ListFull,
    /// Every u64 id has been handed out; unreachable in practice, but never a wrap.
    #[error("the list has run out of entry ids")]
    IdsExhausted,
}

impl TodoError {
    /// The request field at fault, for `google.rpc.BadRequest`; `None` for state errors.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Text(e) => Some(e.field()),
            Self::Date(_) => Some("date"),
            Self::EntryNotFound { .. } => Some("id"),
            Self::ListFull | Self::IdsExhausted => None,
        }
    }

    /// Which status code family this error belongs to (the README's error contract).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Text(_) | Self::Date(_) => ErrorKind::InvalidArgument,
            Self::EntryNotFound { .. } => ErrorKind::NotFound,
            Self::ListFull | Self::IdsExhausted => ErrorKind::FailedPrecondition,
        }
    }
}

impl TodoList {
    /// An empty list called `name` (1..=256 bytes, no control characters; field `list`).
    pub fn new(name: String) -> Result<Self, TodoError> {
        text::required("list", &name, MAX_KEY_BYTES)?;
        Ok(Self {
            name,
            entries: BTreeMap::new(),
            next_id: 1,
        })
    }

    /// Adds an entry and returns it with its new id.
    pub fn add(&mut self, date: Date, title: String) -> Result<Entry, TodoError> {
        check_title(&title)?;
        if self.entries.len() >= MAX_ENTRIES {
            return Err(TodoError::ListFull);
        }
        let id = self.next_id;
        self.next_id = id.checked_add(1).ok_or(TodoError::IdsExhausted)?;
        let entry = Entry { id, date, title };
        self.entries.insert(id, entry.clone());
        Ok(entry)
    }

    /// Every entry, or only those on `date`, ordered by date then id.
    pub fn entries(&self, date: Option<Date>) -> Vec<Entry> {
        let mut found: Vec<Entry> = self
            .entries
            .values()
            .filter(|e| date.is_none_or(|d| e.date == d))
            .cloned()
            .collect();
        // Stable sort of an id-ordered sequence: equal dates stay in id order.
        found.sort_by_key(|e| e.date);
        found
    }

    /// The entry with `id`, if it exists.
    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Changes an entry's date and/or title (`None` keeps the current value) and returns it.
    pub fn update(
        &mut self,
        id: u64,
        date: Option<Date>,
        title: Option<String>,
    ) -> Result<Entry, TodoError> {
        if let Some(title) = &title {
            check_title(title)?;
        }
        let entry = self
            .entries
            .get_mut(&id)
            .ok_or(TodoError::EntryNotFound { id })?;
        if let Some(date) = date {
            entry.date = date;
        }
        if let Some(title) = title {
            entry.title = title;
        }
        Ok(entry.clone())
    }

    /// Removes an entry and returns what it was. Its id is not handed out again.
    pub fn delete(&mut self, id: u64) -> Result<Entry, TodoError> {
        self.entries
            .remove(&id)
            .ok_or(TodoError::EntryNotFound { id })
    }
}

/// Titles are kept as given (not trimmed) but must have something besides whitespace.
fn check_title(title: &str) -> Result<(), TodoError> {
    Ok(text::required("title", title, MAX_TITLE_BYTES)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    fn list() -> TodoList {
        TodoList::new("alice".into()).unwrap()
    }

    fn ids(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_new_list_is_empty_and_named() {
        let l = list();
        assert_eq!(l.name, "alice");
        assert!(l.is_empty() && l.entries(None).is_empty());
        assert_eq!(l.next_id, 1);
    }

    #[test]
    fn list_name_is_checked_like_a_key() {
        for bad in [String::new(), "x".repeat(257), "a\nb".into()] {
            let err = TodoList::new(bad).unwrap_err();
            assert_eq!(
                (err.field(), err.kind()),
                (Some("list"), ErrorKind::InvalidArgument)
            );
        }
        assert!(TodoList::new("x".repeat(256)).is_ok());
    }

    #[test]
    fn ids_start_at_one_and_count_up() {
        let mut l = list();
        let a = l.add(d("2024-01-01"), "Dentist".into()).unwrap();
        let b = l.add(d("2024-01-01"), "Shopping".into()).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert_eq!(a.title, "Dentist");
        assert_eq!(l.get(2), Some(&b));
    }

    #[test]
    fn ids_are_never_reused() {
        let mut l = list();
        l.add(d("2024-01-01"), "a".into()).unwrap();
        let b = l.add(d("2024-01-01"), "b".into()).unwrap();
        l.delete(b.id).unwrap();
        let c = l.add(d("2024-01-01"), "c".into()).unwrap();
        assert_eq!(c.id, 3);
        assert_eq!(l.get(2), None);
    }

    #[test]
    fn entries_are_ordered_by_date_then_id() {
        let mut l = list();
        l.add(d("2024-03-01"), "1".into()).unwrap();
        l.add(d("2024-01-15"), "2".into()).unwrap();
        l.add(d("2024-03-01"), "3".into()).unwrap();
        l.add(d("2023-12-31"), "4".into()).unwrap();
        assert_eq!(ids(&l.entries(None)), [4, 2, 1, 3]);
        // A later update moving an old entry keeps id order within the new date.
        l.update(4, Some(d("2024-03-01")), None).unwrap();
        assert_eq!(ids(&l.entries(None)), [2, 1, 3, 4]);
    }

    #[test]
    fn entries_filter_by_date() {
        let mut l = list();
        l.add(d("2024-01-01"), "a".into()).unwrap();
        l.add(d("2024-01-02"), "b".into()).unwrap();
        l.add(d("2024-01-01"), "c".into()).unwrap();
        assert_eq!(ids(&l.entries(Some(d("2024-01-01")))), [1, 3]);
        assert!(l.entries(Some(d("2030-01-01"))).is_empty());
    }

    #[test]
    fn update_changes_only_what_is_given() {
        let mut l = list();
        l.add(d("2024-01-01"), "a".into()).unwrap();
        let e = l.update(1, None, Some("b".into())).unwrap();
        assert_eq!((e.date, e.title.as_str()), (d("2024-01-01"), "b"));
        let e = l.update(1, Some(d("2025-05-05")), None).unwrap();
        assert_eq!((e.date, e.title.as_str()), (d("2025-05-05"), "b"));
        let e = l.update(1, None, None).unwrap();
        assert_eq!(l.get(1), Some(&e));
    }

    #[test]
    fn update_and_delete_of_a_missing_id_are_not_found() {
        let mut l = list();
        l.add(d("2024-01-01"), "a".into()).unwrap();
        l.delete(1).unwrap();
        for err in [
            l.update(1, None, Some("x".into())).unwrap_err(),
            l.delete(1).unwrap_err(),
            l.delete(0).unwrap_err(),
        ] {
            assert!(matches!(err, TodoError::EntryNotFound { .. }));
            assert_eq!((err.field(), err.kind()), (Some("id"), ErrorKind::NotFound));
        }
        assert_eq!(
            l.delete(7).unwrap_err().to_string(),
            "entry 7 does not exist"
        );
    }

    #[test]
    fn delete_returns_the_removed_entry() {
        let mut l = list();
        let e = l.add(d("2024-01-01"), "a".into()).unwrap();
        assert_eq!(l.delete(1), Ok(e));
        assert!(l.is_empty());
    }

    #[test]
    fn titles_must_be_one_short_non_blank_line() {
        let mut l = list();
        for bad in [
            String::new(),
            "   ".into(),
            "x".repeat(1_001),
            "a\nb".into(),
            "tab\there".into(),
        ] {
            let err = l.add(d("2024-01-01"), bad.clone()).unwrap_err();
            assert_eq!(
                (err.field(), err.kind()),
                (Some("title"), ErrorKind::InvalidArgument),
                "{bad:?}"
            );
        }
        assert!(l.is_empty());
        assert_eq!(l.next_id, 1, "a refused add spends no id");
        let e = l.add(d("2024-01-01"), "x".repeat(1_000)).unwrap();
        assert_eq!(e.title.len(), 1_000);
        assert_eq!(
            l.add(d("2024-01-01"), "  padded  ".into()).unwrap().title,
            "  padded  "
        );
    }

    #[test]
    fn a_bad_title_in_update_changes_nothing() {
        let mut l = list();
        l.add(d("2024-01-01"), "a".into()).unwrap();
        let before = l.clone();
        let err = l
            .update(1, Some(d("2030-01-01")), Some(String::new()))
            .unwrap_err();
        assert_eq!(err.field(), Some("title"));
        assert_eq!(l, before);
        // Bad input is reported even for an id that does not exist.
        assert_eq!(
            l.update(99, None, Some("\0".into())).unwrap_err().field(),
            Some("title")
        );
    }

    #[test]
    fn entries_per_list_are_capped() {
        let mut l = list();
        for _ in 0..MAX_ENTRIES {
            l.add(d("2024-01-01"), "t".into()).unwrap();
        }
        let err = l.add(d("2024-01-01"), "one more".into()).unwrap_err();
        assert_eq!(
            (err.clone(), err.kind(), err.field()),
            (TodoError::ListFull, ErrorKind::FailedPrecondition, None)
        );
        // Deleting one makes room again, with a fresh id.
        l.delete(1).unwrap();
        assert_eq!(
            l.add(d("2024-01-01"), "t".into()).unwrap().id,
            MAX_ENTRIES as u64 + 1
        );
    }

    #[test]
    fn running_out_of_ids_is_an_error_not_a_wrap() {
        let mut l = list();
        l.next_id = u64::MAX;
        assert_eq!(
            l.add(d("2024-01-01"), "t".into()),
            Err(TodoError::IdsExhausted)
        );
        assert!(l.is_empty());
    }

    #[test]
    fn date_errors_name_the_date_field() {
        let err = TodoError::from(Date::parse("2026-02-29").unwrap_err());
        assert_eq!(
            (err.field(), err.kind()),
            (Some("date"), ErrorKind::InvalidArgument)
        );
        assert_eq!(err.to_string(), "day 29 does not exist in 2026-02");
    }
}
