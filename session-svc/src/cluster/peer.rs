//! Actor-to-actor calls between replicas: a cart served here holding stock at a sku served
//! elsewhere. The call goes straight to the replica placement names, marked as forwarded
//! (so that replica serves it, waiting for the shard's lease if it is taking it over), with
//! what remains of the caller's deadline.

use std::sync::Arc;

use kit::{
    deadline::{ABSOLUTE_HEADER, Deadline},
    forward::FORWARDED_HEADER,
};
use proto::session::v1::{
    HoldRequest, HoldResponse, peer_service_client::PeerServiceClient,
    peer_service_server::PeerService,
};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::Cluster;
use crate::{
    error::Error,
    inventory::{Held, Reserve, Settle, SkuEntity},
    runtime::{Kind, validate_key},
};

/// Sets `cart`'s hold on `sku` at `owner`, the replica serving the sku: `(units, settle)`.
pub async fn hold(
    cluster: &Cluster,
    owner: &Arc<str>,
    sku: &str,
    cart: &str,
    (quantity, settle): (i64, bool),
    deadline: Deadline,
) -> Result<Held, Error> {
    let mut client = PeerServiceClient::new(cluster.channel(owner));
    let mut request = Request::new(HoldRequest {
        sku: sku.to_string(),
        cart: cart.to_string(),
        quantity,
        settle,
    });
    request.set_timeout(deadline.remaining());
    let metadata = request.metadata_mut();
    if let Ok(me) = MetadataValue::try_from(cluster.me().as_ref()) {
        metadata.insert(FORWARDED_HEADER, me);
    }
    if let Ok(at) = MetadataValue::try_from(deadline.unix_ms().to_string()) {
        metadata.insert(ABSOLUTE_HEADER, at);
    }
    match client.hold(request).await {
        Ok(answer) if answer.get_ref().tracked => Ok(Held::Set),
        Ok(_) => Ok(Held::Untracked),
        Err(status) => Err(Error::from_peer(&status)),
    }
}

/// The server side: holds asked for by carts on other replicas.
#[derive(Clone)]
pub struct PeerApi {
    /// The sku actors.
    skus: Kind<SkuEntity>,
    /// Deadline of calls that carry none.
    default_deadline: std::time::Duration,
}

impl PeerApi {
    /// Serves holds at `skus`.
    pub fn new(skus: Kind<SkuEntity>, default_deadline: std::time::Duration) -> Self {
        Self {
            skus,
            default_deadline,
        }
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn hold(&self, request: Request<HoldRequest>) -> Result<Response<HoldResponse>, Status> {
        let deadline = Deadline::accept(&request, self.default_deadline);
        let HoldRequest {
            sku,
            cart,
            quantity,
            settle,
        } = request.into_inner();
        validate_key("sku", &sku)?;
        validate_key("cart", &cart)?;
        if quantity < 0 {
            return Err(Error::invalid("quantity", "must not be negative").into());
        }
        let held = if settle {
            self.skus
                .call(&sku, Settle { cart, quantity }, deadline)
                .await?
        } else {
            self.skus
                .call(&sku, Reserve { cart, quantity }, deadline)
                .await?
        };
        Ok(Response::new(HoldResponse {
            tracked: held == Held::Set,
        }))
    }
}
