//! `session.v1.TodoService`: requests become list commands at the edge; each list is an actor.

use std::time::Duration;

use proto::session::v1::{self as pb, todo_service_server::TodoService};
use store_svc::kit::deadline::Deadline;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::entity::{TodoCommand, TodoEntity, TodoReply, parse_page_token};
use crate::{
    api::{self, watch},
    domain::Date,
    error::Error,
    runtime::{Entity, Kind, validate_key},
};

/// The gRPC face of the list actors.
#[derive(Clone)]
pub struct TodoApi {
    /// The list actors.
    lists: Kind<TodoEntity>,
    /// Deadline of requests that did not pass through the deadline layer.
    default_deadline: Duration,
}

impl TodoApi {
    /// A service sending to `lists`.
    pub fn new(lists: Kind<TodoEntity>, default_deadline: Duration) -> Self {
        Self {
            lists,
            default_deadline,
        }
    }

    async fn call<T>(
        &self,
        request: &Request<T>,
        list: &str,
        command: TodoCommand,
    ) -> Result<TodoReply, Error> {
        let deadline = Deadline::accept(request, self.default_deadline);
        self.lists.call(list, command, deadline).await
    }
}

/// A required date.
fn date(wire: &str) -> Result<Date, Error> {
    Date::parse(wire).map_err(|e| Error::invalid("date", e.to_string()))
}

/// An optional date: empty means none.
fn optional_date(wire: &str) -> Result<Option<Date>, Error> {
    if wire.is_empty() {
        Ok(None)
    } else {
        date(wire).map(Some)
    }
}

fn unexpected(reply: &TodoReply) -> Status {
    Status::internal(format!("the list actor answered an unexpected {reply:?}"))
}

#[tonic::async_trait]
impl TodoService for TodoApi {
    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list))]
    async fn add_entry(
        &self,
        request: Request<pb::AddEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = request.get_ref();
        validate_key("list", &r.list)?;
        let command = TodoCommand::Add {
            date: date(&r.date)?,
            title: r.title.clone(),
            request_id: api::request_id(&r.request_id, || pb::AddEntryRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let list = r.list.clone();
        match self.call(&request, &list, command).await? {
            TodoReply::Entry(entry) => Ok(Response::new(entry)),
            other => Err(unexpected(&other)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list))]
    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let r = request.get_ref();
        validate_key("list", &r.list)?;
        let page_size = usize::try_from(r.page_size).map_err(|_| {
            Error::invalid(
                "page_size",
                format!(
                    "is {}; use 0 for as many as fit, or a positive count",
                    r.page_size
                ),
            )
        })?;
        let command = TodoCommand::List {
            date: optional_date(&r.date)?,
            page_size,
            after: parse_page_token(&r.page_token)?,
        };
        let list = r.list.clone();
        match self.call(&request, &list, command).await? {
            TodoReply::Entries(entries) => Ok(Response::new(entries)),
            other => Err(unexpected(&other)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list, id = request.get_ref().id))]
    async fn update_entry(
        &self,
        request: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = request.get_ref();
        validate_key("list", &r.list)?;
        let command = TodoCommand::Update {
            id: r.id,
            date: optional_date(&r.date)?,
            title: (!r.title.is_empty()).then(|| r.title.clone()),
            request_id: api::request_id(&r.request_id, || pb::UpdateEntryRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let list = r.list.clone();
        match self.call(&request, &list, command).await? {
            TodoReply::Entry(entry) => Ok(Response::new(entry)),
            other => Err(unexpected(&other)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list, id = request.get_ref().id))]
    async fn delete_entry(
        &self,
        request: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        let r = request.get_ref();
        validate_key("list", &r.list)?;
        let command = TodoCommand::Delete {
            id: r.id,
            request_id: api::request_id(&r.request_id, || pb::DeleteEntryRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let list = r.list.clone();
        match self.call(&request, &list, command).await? {
            TodoReply::Deleted => Ok(Response::new(pb::DeleteEntryResponse {})),
            other => Err(unexpected(&other)),
        }
    }

    type WatchListStream = ReceiverStream<Result<pb::WatchListResponse, Status>>;

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list))]
    async fn watch_list(
        &self,
        request: Request<pb::WatchListRequest>,
    ) -> Result<Response<Self::WatchListStream>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let (first, changes) = self.lists.watch(&request.get_ref().list, deadline).await?;
        let entity = self.lists.entity().clone();
        Ok(Response::new(watch::stream(
            first,
            changes,
            self.lists.draining(),
            move |snapshot| entity.is_final(snapshot),
        )))
    }
}
