//! `session.v1.TodoService`: requests become list commands at the edge; each list is an actor.

use std::time::Duration;

use kit::deadline::Deadline;
use proto::session::v1::{self as pb, todo_service_server::TodoService};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::entity::{
    AddEntry, DeleteEntry, ListEntries, TodoEntity, UpdateEntry, parse_page_token,
};
use crate::{
    api::{self, Respond, watch},
    domain::Date,
    error::Error,
    runtime::{Entity, Kind},
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

    /// The one path of every method: see [`api::answer`].
    async fn answer<T, R>(
        &self,
        call: &Request<T>,
        list: &str,
        request: R,
    ) -> Result<Response<<R::Reply as Respond>::Message>, Status>
    where
        R: crate::runtime::Request<TodoEntity>,
        R::Reply: Respond,
    {
        api::answer(&self.lists, self.default_deadline, call, list, request).await
    }
}

impl Respond for pb::Entry {
    type Message = pb::Entry;

    fn respond(self) -> Response<pb::Entry> {
        Response::new(self)
    }
}

impl Respond for pb::ListEntriesResponse {
    type Message = pb::ListEntriesResponse;

    fn respond(self) -> Response<pb::ListEntriesResponse> {
        Response::new(self)
    }
}

impl Respond for pb::DeleteEntryResponse {
    type Message = pb::DeleteEntryResponse;

    fn respond(self) -> Response<pb::DeleteEntryResponse> {
        Response::new(self)
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

#[tonic::async_trait]
impl TodoService for TodoApi {
    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list))]
    async fn add_entry(
        &self,
        request: Request<pb::AddEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = request.get_ref();
        let command = AddEntry {
            date: date(&r.date)?,
            title: r.title.clone(),
            request_id: api::request_id(&r.request_id, || pb::AddEntryRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let list = r.list.clone();
        self.answer(&request, &list, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list))]
    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let r = request.get_ref();
        let page_size = usize::try_from(r.page_size).map_err(|_| {
            Error::invalid(
                "page_size",
                format!(
                    "is {}; use 0 for as many as fit, or a positive count",
                    r.page_size
                ),
            )
        })?;
        let command = ListEntries {
            date: optional_date(&r.date)?,
            page_size,
            after: parse_page_token(&r.page_token)?,
        };
        let list = r.list.clone();
        self.answer(&request, &list, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list, id = request.get_ref().id))]
    async fn update_entry(
        &self,
        request: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = request.get_ref();
        let command = UpdateEntry {
            id: r.id,
            date: optional_date(&r.date)?,
            title: (!r.title.is_empty()).then(|| r.title.clone()),
            request_id: api::request_id(&r.request_id, || pb::UpdateEntryRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let list = r.list.clone();
        self.answer(&request, &list, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list, id = request.get_ref().id))]
    async fn delete_entry(
        &self,
        request: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        let r = request.get_ref();
        let command = DeleteEntry {
            id: r.id,
            request_id: api::request_id(&r.request_id, || pb::DeleteEntryRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let list = r.list.clone();
        self.answer(&request, &list, command).await
    }

    type WatchListStream = ReceiverStream<Result<pb::WatchListResponse, Status>>;

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "todo", key = %request.get_ref().list))]
    async fn watch_list(
        &self,
        request: Request<pb::WatchListRequest>,
    ) -> Result<Response<Self::WatchListStream>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let subscription = self.lists.watch(&request.get_ref().list, deadline).await?;
        let entity = self.lists.entity().clone();
        Ok(Response::new(watch::stream(
            subscription,
            self.lists.draining(),
            move |snapshot| entity.is_final(snapshot),
        )))
    }
}
