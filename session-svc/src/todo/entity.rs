//! The to-do kind: the Elixir `Todo.Server`, one actor per list, as an [`Entity`].

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use kit::echo::echo;
use prost::Message;
use proto::session::v1 as pb;

use crate::{
    domain::{Date, Entry, TodoList},
    error::{Error, reason},
    runtime::{
        Child, Children, Ctx, Effect, Entity, Env, RecordWrite, Replay, Request, RequestId, Step,
        escape_key, store::mutation,
    },
};

/// Store namespace of the lists' entries, one record each.
pub const ENTRIES_NAMESPACE: &str = "todo_entries";

/// Most bytes of entries one ListEntries page carries: under gRPC's default 4 MiB message.
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// The store key of entry `id` of list `list`: zero-padded so keys sort by id.
pub fn entry_key(list: &str, id: u64) -> String {
    format!("{}/{id:020}", escape_key(list))
}

/// Bytes of entries per archived page, at most: far below store-svc's value limit.
const ARCHIVE_PAGE_BYTES: usize = 256 * 1024;
/// Entry deletions per commit: store-svc's limit of mutations per commit (100), less the
/// check of the shard's epoch that a commit carries when session-svc runs as several replicas.
const DELETES_PER_COMMIT: usize = 99;

/// The name a list's records take in the archive: its escaped name and the time of its last
/// change, so a list archived, started again and archived again is kept twice, not over.
pub fn archive_id(list: &str, updated_ms: i64) -> String {
    format!("{}@{:020}", escape_key(list), updated_ms.max(0))
}

/// Moves a list untouched since `cutoff_ms` out of the live namespaces (the sweeper sends
/// it, with `--todo-archive-after`): its head to `todo/<id>` and its entries, in pages of a
/// `ListEntriesResponse` each, to `todo_entries/<id>/<page>` of the archive namespace (or
/// nowhere, when `archive` is `None`); then its live entries and head are deleted.
///
/// A list of up to 10,000 entries outgrows one commit, so the actor does it in steps inside
/// this one message, while no other message of the list can run: copies first (each created
/// once, so a repeat after a crash keeps the complete first copy), then deletions, then the
/// head. A crash part-way leaves the list with fewer entries, all of them in the archive,
/// and the next pass finishes the move. A list written since the cutoff stays (false).
#[derive(Debug, Clone)]
pub struct ArchiveList {
    /// Only lists last changed at or before this time (Unix milliseconds) go.
    pub cutoff_ms: i64,
    /// Where the records go: `Some(namespace)` to keep them there, `None` to delete them.
    pub archive: Option<&'static str>,
}

impl ArchiveList {
    fn wanted(&self, stored: &StoredList) -> bool {
        stored.updated_ms > 0 && stored.updated_ms <= self.cutoff_ms
    }
}

/// Creates `(key, value)` in `namespace` unless it exists (a copy made before a crash).
async fn create_once(
    store: &crate::runtime::Store,
    namespace: &str,
    key: String,
    value: Vec<u8>,
    deadline: kit::deadline::Deadline,
) -> Result<(), Error> {
    match store
        .commit(vec![mutation(namespace, key, Some(value), 0)], deadline)
        .await
    {
        Ok(_) | Err(Error::Aborted(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

impl Request<TodoEntity> for ArchiveList {
    type Reply = bool;
    const PREPARE_WRITES: bool = true;

    fn name(&self) -> &'static str {
        "archive_list"
    }

    fn prepare<'a>(&'a mut self, env: Env<'a, TodoEntity>) -> Option<Effect<'a>> {
        let stored = env.state.filter(|stored| self.wanted(stored))?;
        Some(Box::pin(async move {
            let (store, deadline) = (env.store, env.deadline);
            if let Some(archive) = self.archive {
                let id = archive_id(env.key, stored.updated_ms);
                let head = TodoEntity.encode_state(stored);
                create_once(store, archive, format!("todo/{id}"), head, deadline).await?;
                let mut page = pb::ListEntriesResponse::default();
                let mut pages = 0usize;
                let entries = stored.list.entries(None);
                for (i, entry) in entries.iter().enumerate() {
                    page.entries.push(wire_entry(entry));
                    if page.encoded_len() >= ARCHIVE_PAGE_BYTES || i + 1 == entries.len() {
                        let key = format!("{ENTRIES_NAMESPACE}/{id}/{pages:06}");
                        let bytes = std::mem::take(&mut page).encode_to_vec();
                        create_once(store, archive, key, bytes, deadline).await?;
                        pages += 1;
                    }
                }
            }
            let versions: Vec<_> = stored.versions.iter().collect();
            for chunk in versions.chunks(DELETES_PER_COMMIT) {
                let deletes = chunk
                    .iter()
                    .map(|(id, version)| {
                        mutation(ENTRIES_NAMESPACE, entry_key(env.key, **id), None, **version)
                    })
                    .collect();
                store.commit(deletes, deadline).await?;
            }
            Ok(())
        }))
    }

    fn handle(
        self,
        _: &TodoEntity,
        _: &str,
        state: &mut Option<StoredList>,
        _: Ctx,
    ) -> Result<Step<bool>, Error> {
        if !state.as_ref().is_some_and(|stored| self.wanted(stored)) {
            return Ok(Step::Read(false));
        }
        // No state: the runtime deletes the list's head in this commit.
        *state = None;
        Ok(Step::write(true))
    }
}

/// Add an entry (creating the list on first use): answered with the entry.
#[derive(Debug, Clone)]
pub struct AddEntry {
    /// Due date.
    pub date: Date,
    /// What to do.
    pub title: String,
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// Read the entries, all or of one date, a page at a time.
#[derive(Debug, Clone)]
pub struct ListEntries {
    /// Only this date, if given.
    pub date: Option<Date>,
    /// Entries per page at most; 0: as many as fit in [`MAX_PAGE_BYTES`].
    pub page_size: usize,
    /// Start after this entry (date, id): where the previous page ended.
    pub after: Option<(Date, u64)>,
}

/// Change an entry: answered with the entry as it is now.
#[derive(Debug, Clone)]
pub struct UpdateEntry {
    /// The entry.
    pub id: u64,
    /// New date, if given.
    pub date: Option<Date>,
    /// New title, if given.
    pub title: Option<String>,
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// Remove an entry.
#[derive(Debug, Clone)]
pub struct DeleteEntry {
    /// The entry.
    pub id: u64,
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// The to-do kind. It has no settings today; it is a value so it could.
#[derive(Debug, Clone, Default)]
pub struct TodoEntity;

/// A list as its actor holds it: the domain list and the store version of each entry's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredList {
    /// The list itself.
    pub list: TodoList,
    /// Entry id → version of its record, the version the next write of it expects.
    pub versions: HashMap<u64, u64>,
    /// When an entry was last added, changed or deleted (Unix ms; 0: not known).
    pub updated_ms: i64,
}

/// An entry on the wire.
pub fn wire_entry(entry: &Entry) -> pb::Entry {
    pb::Entry {
        id: entry.id,
        date: entry.date.to_string(),
        title: entry.title.clone(),
    }
}

/// The page token of a listing that ended at `last`.
pub fn page_token(last: &Entry) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}/{}", last.date, last.id))
}

/// The (date, id) a page token says the previous page ended at.
pub fn parse_page_token(token: &str) -> Result<Option<(Date, u64)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let garbage = || {
        Error::invalid(
            "page_token",
            "is not a token this server issued; pass next_page_token unchanged, or empty for the \
             first page",
        )
    };
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(garbage)?;
    let (date, id) = text.split_once('/').ok_or_else(garbage)?;
    let date = Date::parse(date).map_err(|_| garbage())?;
    let id = id.parse().map_err(|_| garbage())?;
    Ok(Some((date, id)))
}

impl TodoEntity {
    /// One page of `list`'s entries (of `date`, if given) after `after`, at most `page_size`
    /// (0: any number) and [`MAX_PAGE_BYTES`], with the token of the next page.
    fn page(
        list: &TodoList,
        date: Option<Date>,
        page_size: usize,
        after: Option<(Date, u64)>,
    ) -> pb::ListEntriesResponse {
        let limit = if page_size == 0 {
            usize::MAX
        } else {
            page_size
        };
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut last: Option<&Entry> = None;
        let all = list.entries(date);
        let mut rest = all
            .iter()
            .filter(|e| after.is_none_or(|(d, id)| (e.date, e.id) > (d, id)))
            .peekable();
        while let Some(entry) = rest.peek() {
            let wire = wire_entry(entry);
            let len = wire.encoded_len() + 4;
            if entries.len() == limit || (!entries.is_empty() && bytes + len > MAX_PAGE_BYTES) {
                break;
            }
            bytes += len;
            entries.push(wire);
            last = rest.next();
        }
        let more = rest.peek().is_some();
        pb::ListEntriesResponse {
            entries,
            next_page_token: last.filter(|_| more).map(page_token).unwrap_or_default(),
        }
    }
}

impl Entity for TodoEntity {
    const KIND: &'static str = "todo";
    const KEY_FIELD: &'static str = "list";
    type State = StoredList;
    type Snapshot = pb::WatchListResponse;

    fn decode_state(&self, bytes: &[u8]) -> Result<StoredList, String> {
        let head = pb::TodoList::decode(bytes).map_err(|e| e.to_string())?;
        let mut list = TodoList::new(head.name).map_err(|e| e.to_string())?;
        list.next_id = head.next_id;
        Ok(StoredList {
            list,
            versions: HashMap::new(),
            updated_ms: head.updated_ms,
        })
    }

    fn encode_state(&self, stored: &StoredList) -> Vec<u8> {
        pb::TodoList {
            name: stored.list.name.clone(),
            next_id: stored.list.next_id,
            entry_count: stored.list.len() as u64,
            updated_ms: stored.updated_ms,
        }
        .encode_to_vec()
    }

    fn children(&self, key: &str) -> Option<Children> {
        Some(Children {
            namespace: ENTRIES_NAMESPACE,
            prefix: format!("{}/", escape_key(key)),
        })
    }

    fn attach_children(&self, stored: &mut StoredList, children: Vec<Child>) -> Result<(), String> {
        for child in children {
            let wire = pb::Entry::decode(child.value.as_slice()).map_err(|e| e.to_string())?;
            let date = Date::parse(&wire.date).map_err(|e| e.to_string())?;
            let entry = Entry {
                id: wire.id,
                date,
                title: wire.title,
            };
            stored.versions.insert(entry.id, child.version);
            stored.list.entries.insert(entry.id, entry);
        }
        Ok(())
    }

    fn snapshot(&self, stored: &StoredList, version: u64) -> pb::WatchListResponse {
        pb::WatchListResponse {
            list: stored.list.name.clone(),
            entries: stored.list.entries(None).iter().map(wire_entry).collect(),
            version,
        }
    }

    fn is_final(&self, _: &pb::WatchListResponse) -> bool {
        false // a list lives on
    }

    fn missing(&self, key: &str) -> Error {
        Error::NotFound(
            reason::LIST_NOT_FOUND,
            format!("no to-do list named {}; AddEntry creates it", echo(key)),
        )
    }
}

/// The write of one entry's record, expected at `expected_version`.
fn put_entry(list: &str, entry: &Entry, expected_version: u64) -> RecordWrite {
    RecordWrite {
        namespace: ENTRIES_NAMESPACE,
        key: entry_key(list, entry.id),
        value: Some(wire_entry(entry).encode_to_vec()),
        expected_version,
    }
}

/// The entry `id` as it is now, for a retry of the request that changed it.
fn current_entry(
    stored: Option<&StoredList>,
    list: &str,
    id: u64,
) -> Result<Replay<pb::Entry>, Error> {
    let stored = stored.ok_or_else(|| TodoEntity.missing(list))?;
    let entry = stored.list.get(id).ok_or_else(|| {
        Error::NotFound(
            reason::ENTRY_NOT_FOUND,
            format!("entry {id}, which this request changed, has been deleted since"),
        )
    })?;
    Ok(Replay::Reply(wire_entry(entry)))
}

// Each change writes the list's head (next id, count) and the one entry it touched.
impl Request<TodoEntity> for AddEntry {
    type Reply = pb::Entry;

    fn name(&self) -> &'static str {
        "add_entry"
    }

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn handle(
        self,
        _: &TodoEntity,
        key: &str,
        state: &mut Option<StoredList>,
        ctx: Ctx,
    ) -> Result<Step<pb::Entry>, Error> {
        // A new list is kept only if its first entry is valid: state stays None on error.
        let mut fresh = None;
        let stored = match state {
            Some(stored) => stored,
            None => fresh.insert(StoredList {
                list: TodoList::new(key.to_string())?,
                versions: HashMap::new(),
                updated_ms: ctx.now_ms,
            }),
        };
        let entry = stored.list.add(self.date, self.title)?;
        stored.versions.insert(entry.id, 1);
        stored.updated_ms = ctx.now_ms;
        if let Some(stored) = fresh {
            *state = Some(stored);
        }
        Ok(Step::Write {
            reply: wire_entry(&entry),
            records: vec![put_entry(key, &entry, 0)],
            outcome: entry.id,
            after: None,
        })
    }

    fn replay(
        self,
        _: &TodoEntity,
        key: &str,
        state: Option<&StoredList>,
        _: u64,
        outcome: u64,
    ) -> Result<Replay<pb::Entry>, Error> {
        current_entry(state, key, outcome)
    }
}

impl Request<TodoEntity> for ListEntries {
    type Reply = pb::ListEntriesResponse;

    fn name(&self) -> &'static str {
        "list_entries"
    }

    fn handle(
        self,
        entity: &TodoEntity,
        key: &str,
        state: &mut Option<StoredList>,
        _: Ctx,
    ) -> Result<Step<pb::ListEntriesResponse>, Error> {
        let stored = state.as_ref().ok_or_else(|| entity.missing(key))?;
        Ok(Step::Read(TodoEntity::page(
            &stored.list,
            self.date,
            self.page_size,
            self.after,
        )))
    }
}

impl Request<TodoEntity> for UpdateEntry {
    type Reply = pb::Entry;

    fn name(&self) -> &'static str {
        "update_entry"
    }

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn handle(
        self,
        entity: &TodoEntity,
        key: &str,
        state: &mut Option<StoredList>,
        ctx: Ctx,
    ) -> Result<Step<pb::Entry>, Error> {
        let stored = state.as_mut().ok_or_else(|| entity.missing(key))?;
        let unchanged = self.date.is_none() && self.title.is_none();
        let entry = stored.list.update(self.id, self.date, self.title)?;
        if unchanged {
            return Ok(Step::Read(wire_entry(&entry)));
        }
        let version = stored.versions.entry(self.id).or_insert(0);
        let record = put_entry(key, &entry, *version);
        *version += 1;
        stored.updated_ms = ctx.now_ms;
        Ok(Step::Write {
            reply: wire_entry(&entry),
            records: vec![record],
            outcome: 0,
            after: None,
        })
    }

    fn replay(
        self,
        _: &TodoEntity,
        key: &str,
        state: Option<&StoredList>,
        _: u64,
        _: u64,
    ) -> Result<Replay<pb::Entry>, Error> {
        current_entry(state, key, self.id)
    }
}

impl Request<TodoEntity> for DeleteEntry {
    type Reply = pb::DeleteEntryResponse;

    fn name(&self) -> &'static str {
        "delete_entry"
    }

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn handle(
        self,
        entity: &TodoEntity,
        key: &str,
        state: &mut Option<StoredList>,
        ctx: Ctx,
    ) -> Result<Step<pb::DeleteEntryResponse>, Error> {
        let stored = state.as_mut().ok_or_else(|| entity.missing(key))?;
        stored.list.delete(self.id)?;
        let version = stored.versions.remove(&self.id).unwrap_or(0);
        stored.updated_ms = ctx.now_ms;
        Ok(Step::Write {
            reply: pb::DeleteEntryResponse {},
            records: vec![RecordWrite {
                namespace: ENTRIES_NAMESPACE,
                key: entry_key(key, self.id),
                value: None,
                expected_version: version,
            }],
            outcome: 0,
            after: None,
        })
    }

    /// The entry is gone, as the first attempt left it.
    fn replay(
        self,
        _: &TodoEntity,
        _: &str,
        _: Option<&StoredList>,
        _: u64,
        _: u64,
    ) -> Result<Replay<pb::DeleteEntryResponse>, Error> {
        Ok(Replay::Reply(pb::DeleteEntryResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    fn ctx() -> Ctx {
        Ctx {
            now_ms: 0,
            version: 0,
        }
    }

    fn add(day: &str, title: &str) -> AddEntry {
        AddEntry {
            date: date(day),
            title: title.into(),
            request_id: None,
        }
    }

    /// Handles `request` on a copy of `list`: the state after it and the reply.
    fn apply<R: Request<TodoEntity>>(
        list: Option<&StoredList>,
        request: R,
    ) -> (Option<StoredList>, R::Reply) {
        let mut state = list.cloned();
        match request
            .handle(&TodoEntity, "groceries", &mut state, ctx())
            .unwrap()
        {
            Step::Read(reply) | Step::Write { reply, .. } => (state, reply),
        }
    }

    #[test]
    fn the_first_add_creates_the_list_and_it_round_trips_through_storage() {
        let (list, reply) = apply(None, add("2026-11-22", "milk"));
        let list = list.unwrap();
        assert_eq!(list.list.name, "groceries");
        assert_eq!(reply.id, 1);
        // The head holds no entries; each entry is a child record, loaded back with it.
        let bytes = TodoEntity.encode_state(&list);
        let mut loaded = TodoEntity.decode_state(&bytes).unwrap();
        assert!(loaded.list.is_empty());
        let child = Child {
            key: entry_key("groceries", 1),
            value: wire_entry(list.list.get(1).unwrap()).encode_to_vec(),
            version: 1,
        };
        TodoEntity
            .attach_children(&mut loaded, vec![child])
            .unwrap();
        assert_eq!(loaded, list);
    }

    #[test]
    fn pages_follow_date_then_id_and_tokens_resume_after_the_last_entry() {
        let mut state = None;
        for (day, title) in [
            ("2026-01-03", "c"),
            ("2026-01-01", "a"),
            ("2026-01-02", "b"),
        ] {
            (state, _) = apply(state.as_ref(), add(day, title));
        }
        let list = &state.unwrap().list;
        let first = TodoEntity::page(list, None, 2, None);
        let titles = |page: &pb::ListEntriesResponse| {
            page.entries
                .iter()
                .map(|e| e.title.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(titles(&first), ["a", "b"]);
        let after = parse_page_token(&first.next_page_token).unwrap();
        let second = TodoEntity::page(list, None, 2, after);
        assert_eq!(titles(&second), ["c"]);
        assert!(second.next_page_token.is_empty());
        assert!(
            TodoEntity::page(list, None, 0, None)
                .next_page_token
                .is_empty()
        );
        assert!(parse_page_token("garbage!").is_err());
    }

    #[test]
    fn reading_a_list_that_was_never_added_to_is_not_found() {
        let list = ListEntries {
            date: None,
            page_size: 0,
            after: None,
        };
        let result = list.handle(&TodoEntity, "nope", &mut None, ctx());
        assert!(matches!(result, Err(Error::NotFound(..))));
    }

    #[test]
    fn an_update_that_changes_nothing_is_not_written() {
        let (mut list, _) = apply(None, add("2026-11-22", "milk"));
        let update = UpdateEntry {
            id: 1,
            date: None,
            title: None,
            request_id: None,
        };
        let step = update
            .handle(&TodoEntity, "groceries", &mut list, ctx())
            .unwrap();
        assert!(matches!(step, Step::Read(_)));
    }

    #[test]
    fn an_invalid_first_entry_creates_no_list() {
        let mut state = None;
        let blank = add("2026-11-22", "   ");
        assert!(
            blank
                .handle(&TodoEntity, "groceries", &mut state, ctx())
                .is_err()
        );
        assert_eq!(state, None);
    }

    #[test]
    fn a_retried_add_answers_the_entry_it_made_as_it_is_now() {
        let (stored, _) = apply(None, add("2026-11-22", "milk"));
        let retry = add("2026-11-22", "milk");
        let replay = retry
            .clone()
            .replay(&TodoEntity, "groceries", stored.as_ref(), 1, 1);
        assert!(matches!(replay, Ok(Replay::Reply(pb::Entry { id: 1, .. }))));
        let gone = retry.replay(&TodoEntity, "groceries", stored.as_ref(), 1, 2);
        assert!(matches!(gone, Err(Error::NotFound(..))));
    }
}
