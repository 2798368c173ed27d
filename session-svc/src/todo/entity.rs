//! The to-do kind: seed 004's `Todo.Server`, one actor per list, as an [`Entity`].

use prost::Message;
use proto::session::v1 as pb;

use crate::{
    domain::{Date, Entry, TodoList},
    error::Error,
    runtime::{Command, Ctx, Entity, Step},
};

/// What a list actor can be asked.
#[derive(Debug, Clone)]
pub enum TodoCommand {
    /// Add an entry (creating the list on first use).
    Add {
        /// Due date.
        date: Date,
        /// What to do.
        title: String,
        /// Idempotency key.
        request_id: Option<String>,
    },
    /// Read the entries, all or of one date.
    List {
        /// Only this date, if given.
        date: Option<Date>,
    },
    /// Change an entry.
    Update {
        /// The entry.
        id: u64,
        /// New date, if given.
        date: Option<Date>,
        /// New title, if given.
        title: Option<String>,
        /// Idempotency key.
        request_id: Option<String>,
    },
    /// Remove an entry.
    Delete {
        /// The entry.
        id: u64,
        /// Idempotency key.
        request_id: Option<String>,
    },
}

impl Command for TodoCommand {
    fn request_id(&self) -> Option<&str> {
        match self {
            Self::List { .. } => None,
            Self::Add { request_id, .. }
            | Self::Update { request_id, .. }
            | Self::Delete { request_id, .. } => request_id.as_deref(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add_entry",
            Self::List { .. } => "list_entries",
            Self::Update { .. } => "update_entry",
            Self::Delete { .. } => "delete_entry",
        }
    }
}

/// What a list actor answers.
#[derive(Debug, Clone, PartialEq)]
pub enum TodoReply {
    /// One entry (added or updated).
    Entry(pb::Entry),
    /// Entries asked for.
    Entries(pb::ListEntriesResponse),
    /// The entry is gone.
    Deleted,
}

/// The to-do kind. It has no settings today; it is a value so it could.
#[derive(Debug, Clone, Default)]
pub struct TodoEntity;

/// An entry on the wire.
pub fn wire_entry(entry: &Entry) -> pb::Entry {
    pb::Entry {
        id: entry.id,
        date: entry.date.to_string(),
        title: entry.title.clone(),
    }
}

fn stored(list: &TodoList) -> pb::TodoList {
    pb::TodoList {
        name: list.name.clone(),
        entries: list.entries.values().map(wire_entry).collect(),
        next_id: list.next_id,
    }
}

impl Entity for TodoEntity {
    const KIND: &'static str = "todo";
    const KEY_FIELD: &'static str = "list";
    type State = TodoList;
    type Command = TodoCommand;
    type Reply = TodoReply;
    type Snapshot = pb::WatchListResponse;

    fn decode_state(&self, bytes: &[u8]) -> Result<TodoList, String> {
        let wire = pb::TodoList::decode(bytes).map_err(|e| e.to_string())?;
        let entries = wire
            .entries
            .into_iter()
            .map(|e| {
                let date = Date::parse(&e.date).map_err(|err| err.to_string())?;
                Ok((
                    e.id,
                    Entry {
                        id: e.id,
                        date,
                        title: e.title,
                    },
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(TodoList {
            name: wire.name,
            entries,
            next_id: wire.next_id,
        })
    }

    fn encode_state(&self, list: &TodoList) -> Vec<u8> {
        stored(list).encode_to_vec()
    }

    fn encode_reply(&self, reply: &TodoReply) -> Vec<u8> {
        let (tag, body) = match reply {
            TodoReply::Entry(entry) => (1u8, entry.encode_to_vec()),
            TodoReply::Entries(entries) => (2u8, entries.encode_to_vec()),
            TodoReply::Deleted => (3u8, Vec::new()),
        };
        let mut bytes = vec![tag];
        bytes.extend(body);
        bytes
    }

    fn decode_reply(&self, bytes: &[u8]) -> Result<TodoReply, String> {
        match bytes.split_first() {
            Some((1, body)) => pb::Entry::decode(body).map(TodoReply::Entry),
            Some((2, body)) => pb::ListEntriesResponse::decode(body).map(TodoReply::Entries),
            Some((3, _)) => Ok(TodoReply::Deleted),
            _ => return Err("unknown reply tag".into()),
        }
        .map_err(|e| e.to_string())
    }

    fn snapshot(&self, list: &TodoList, version: u64) -> pb::WatchListResponse {
        pb::WatchListResponse {
            list: list.name.clone(),
            entries: list.entries(None).iter().map(wire_entry).collect(),
            version,
        }
    }

    fn is_final(&self, _: &pb::WatchListResponse) -> bool {
        false // a list lives on
    }

    fn missing(&self, key: &str) -> Error {
        Error::NotFound(format!("no to-do list named {key:?}; AddEntry creates it"))
    }

    fn handle(
        &self,
        key: &str,
        state: &mut Option<TodoList>,
        command: TodoCommand,
        _ctx: Ctx,
    ) -> Result<Step<TodoReply>, Error> {
        let written = |reply| Step::Write {
            reply,
            side_writes: vec![],
        };
        if let TodoCommand::Add { date, title, .. } = command {
            // A new list is kept only if its first entry is valid: state stays None on error.
            let mut fresh = None;
            let list = match state {
                Some(list) => list,
                None => fresh.insert(TodoList::new(key.to_string())?),
            };
            let entry = list.add(date, title)?;
            if let Some(list) = fresh {
                *state = Some(list);
            }
            return Ok(written(TodoReply::Entry(wire_entry(&entry))));
        }
        let Some(list) = state else {
            return Err(self.missing(key));
        };
        Ok(match command {
            TodoCommand::Add { .. } => unreachable!("handled above"),
            TodoCommand::List { date } => Step::Read(TodoReply::Entries(pb::ListEntriesResponse {
                entries: list.entries(date).iter().map(wire_entry).collect(),
            })),
            TodoCommand::Update {
                id, date, title, ..
            } => {
                let unchanged = date.is_none() && title.is_none();
                let reply = TodoReply::Entry(wire_entry(&list.update(id, date, title)?));
                if unchanged {
                    Step::Read(reply)
                } else {
                    written(reply)
                }
            }
            TodoCommand::Delete { id, .. } => {
                list.delete(id)?;
                written(TodoReply::Deleted)
            }
        })
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

    fn apply(list: Option<&TodoList>, command: TodoCommand) -> (Option<TodoList>, TodoReply) {
        let mut state = list.cloned();
        match TodoEntity
            .handle("groceries", &mut state, command, ctx())
            .unwrap()
        {
            Step::Read(reply) | Step::Write { reply, .. } => (state, reply),
        }
    }

    #[test]
    fn the_first_add_creates_the_list_and_it_round_trips_through_storage() {
        let add = TodoCommand::Add {
            date: date("2026-11-22"),
            title: "milk".into(),
            request_id: None,
        };
        let (list, reply) = apply(None, add);
        let list = list.unwrap();
        assert_eq!(list.name, "groceries");
        assert!(matches!(reply, TodoReply::Entry(pb::Entry { id: 1, .. })));
        let bytes = TodoEntity.encode_state(&list);
        assert_eq!(TodoEntity.decode_state(&bytes).unwrap(), list);
    }

    #[test]
    fn reading_a_list_that_was_never_added_to_is_not_found() {
        let result = TodoEntity.handle("nope", &mut None, TodoCommand::List { date: None }, ctx());
        assert!(matches!(result, Err(Error::NotFound(_))));
    }

    #[test]
    fn an_update_that_changes_nothing_is_not_written() {
        let add = TodoCommand::Add {
            date: date("2026-11-22"),
            title: "milk".into(),
            request_id: None,
        };
        let (mut list, _) = apply(None, add);
        let update = TodoCommand::Update {
            id: 1,
            date: None,
            title: None,
            request_id: None,
        };
        let step = TodoEntity
            .handle("groceries", &mut list, update, ctx())
            .unwrap();
        assert!(matches!(step, Step::Read(_)));
    }

    #[test]
    fn an_invalid_first_entry_creates_no_list() {
        let mut state = None;
        let add = TodoCommand::Add {
            date: date("2026-11-22"),
            title: "   ".into(),
            request_id: None,
        };
        assert!(
            TodoEntity
                .handle("groceries", &mut state, add, ctx())
                .is_err()
        );
        assert_eq!(state, None);
    }

    #[test]
    fn replies_survive_their_encoding() {
        for reply in [
            TodoReply::Deleted,
            TodoReply::Entry(pb::Entry {
                id: 3,
                date: "2026-01-01".into(),
                title: "t".into(),
            }),
            TodoReply::Entries(pb::ListEntriesResponse::default()),
        ] {
            let bytes = TodoEntity.encode_reply(&reply);
            assert_eq!(TodoEntity.decode_reply(&bytes).unwrap(), reply);
        }
        assert!(TodoEntity.decode_reply(&[9]).is_err());
    }
}
