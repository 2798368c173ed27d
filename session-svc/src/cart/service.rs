//! `session.v1.CartService`: converts requests into cart commands at the edge (all
//! validation happens here or in the domain), and sends them to the key's actor.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use kit::{deadline::Deadline, echo::echo, wire::PreEncoded};
use proto::session::v1::{self as pb, cart_service_server::CartService};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    convert,
    entity::{
        AddItem, ApplyDiscount, CartEntity, Checkout, EVENTS_NAMESPACE, End, Get, RemoveItem,
        SessionReply, Start, events_prefix,
    },
};
use crate::{
    api::{self, Respond, watch},
    domain::{StartArgs, parse_quantity},
    error::Error,
    runtime::{Kind, validate_key},
};

/// The gRPC face of the cart actors.
#[derive(Clone)]
pub struct CartApi {
    /// The cart actors.
    carts: Kind<CartEntity>,
    /// Deadline of requests that did not pass through the deadline layer.
    default_deadline: Duration,
}

impl CartApi {
    /// A service sending to `carts`.
    pub fn new(carts: Kind<CartEntity>, default_deadline: Duration) -> Self {
        Self {
            carts,
            default_deadline,
        }
    }

    /// The one path of every method: see [`api::answer`].
    async fn answer<T, R>(
        &self,
        call: &Request<T>,
        key: &str,
        request: R,
    ) -> Result<Response<<R::Reply as Respond>::Message>, Status>
    where
        R: crate::runtime::Request<CartEntity>,
        R::Reply: Respond,
    {
        api::answer(&self.carts, self.default_deadline, call, key, request).await
    }
}

impl Respond for SessionReply {
    type Message = pb::Session;

    fn respond(self) -> Response<pb::Session> {
        let mut response = Response::new(self.session);
        if let Some(encoded) = self.encoded {
            // The bytes just written to the store: sent as they are, not encoded again.
            response.extensions_mut().insert(PreEncoded(encoded));
        }
        response
    }
}

impl Respond for pb::Order {
    type Message = pb::Order;

    fn respond(self) -> Response<pb::Order> {
        Response::new(self)
    }
}

/// A fresh session key: 128 random bits, URL-safe, unguessable.
fn new_key() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

#[tonic::async_trait]
impl CartService for CartApi {
    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key))]
    async fn start_session(
        &self,
        request: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let r = request.get_ref();
        let key = if r.key.is_empty() {
            new_key()
        } else {
            r.key.clone()
        };
        let args = StartArgs {
            key: key.clone(),
            domain: r.domain.clone(),
            landing: r.landing.clone(),
            ip: r.ip.clone(),
            member_id: r.member_id.clone(),
        };
        self.answer(&request, &key, Start(args)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key))]
    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let key = request.get_ref().key.clone();
        self.answer(&request, &key, Get).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key, sku = %request.get_ref().sku))]
    async fn add_item(
        &self,
        request: Request<pb::AddItemRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let r = request.get_ref();
        let command = AddItem {
            sku: r.sku.clone(),
            name: r.name.clone(),
            quantity: parse_quantity(r.quantity).map_err(Error::from)?,
            unit_price: convert::money("unit_price", r.unit_price.as_ref())?,
            request_id: api::request_id(&r.request_id, || pb::AddItemRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let key = r.key.clone();
        self.answer(&request, &key, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key, sku = %request.get_ref().sku))]
    async fn remove_item(
        &self,
        request: Request<pb::RemoveItemRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let r = request.get_ref();
        let command = RemoveItem {
            sku: r.sku.clone(),
            quantity: parse_quantity(r.quantity).map_err(Error::from)?,
            request_id: api::request_id(&r.request_id, || pb::RemoveItemRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let key = r.key.clone();
        self.answer(&request, &key, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key))]
    async fn apply_discount(
        &self,
        request: Request<pb::ApplyDiscountRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let r = request.get_ref();
        validate_key("key", &r.key)?;
        // Unknown codes are refused before reaching the actor.
        self.carts
            .entity()
            .catalog
            .lookup(&r.code)
            .map_err(Error::from)?;
        let command = ApplyDiscount {
            code: r.code.clone(),
            request_id: api::request_id(&r.request_id, || pb::ApplyDiscountRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let key = r.key.clone();
        self.answer(&request, &key, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key))]
    async fn checkout(
        &self,
        request: Request<pb::CheckoutRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let r = request.get_ref();
        let command = Checkout {
            request_id: api::request_id(&r.request_id, || pb::CheckoutRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let key = r.key.clone();
        self.answer(&request, &key, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key))]
    async fn end_session(
        &self,
        request: Request<pb::EndSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let r = request.get_ref();
        let command = End {
            request_id: api::request_id(&r.request_id, || pb::EndSessionRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let key = r.key.clone();
        self.answer(&request, &key, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key))]
    async fn list_session_events(
        &self,
        request: Request<pb::ListSessionEventsRequest>,
    ) -> Result<Response<pb::ListSessionEventsResponse>, Status> {
        let r = request.get_ref();
        validate_key("key", &r.key)?;
        if r.page_size < 0 {
            return Err(Error::invalid(
                "page_size",
                format!(
                    "is {}; use 0 for the default (100) or 1 to 1000",
                    r.page_size
                ),
            )
            .into());
        }
        let (key, page_size, page_token) = (r.key.clone(), r.page_size, r.page_token.clone());
        // The actor answers NOT_FOUND for a session never started; its events are durable
        // records (each committed with its change), read straight from the store.
        self.answer(&request, &key, Get).await?;
        let deadline = Deadline::accept(&request, self.default_deadline);
        let (entries, next_page_token) = self
            .carts
            .store()
            .scan(
                EVENTS_NAMESPACE,
                &events_prefix(&key),
                page_size,
                page_token,
                deadline,
            )
            .await?;
        let events = entries
            .iter()
            .map(|entry| prost::Message::decode(entry.value.as_slice()))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Corrupt(format!("an event of {}: {e}", echo(&key))))?;
        Ok(Response::new(pb::ListSessionEventsResponse {
            events,
            next_page_token,
        }))
    }

    type WatchSessionStream = ReceiverStream<Result<pb::Session, Status>>;

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "cart", key = %request.get_ref().key))]
    async fn watch_session(
        &self,
        request: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let subscription = self.carts.watch(&request.get_ref().key, deadline).await?;
        let entity = self.carts.entity().clone();
        Ok(Response::new(watch::stream(
            subscription,
            self.carts.draining(),
            move |session| crate::runtime::Entity::is_final(&entity, session),
        )))
    }
}
