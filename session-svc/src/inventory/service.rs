//! `session.v1.InventoryService`: requests become sku commands at the edge; each sku is an
//! actor.

use std::time::Duration;

use proto::session::v1::{self as pb, inventory_service_server::InventoryService};
use tonic::{Request, Response, Status};

use super::entity::{AdjustStock, GetStock, MAX_UNITS, SetStock, SkuEntity};
use crate::{
    api::{self, Respond},
    error::Error,
    runtime::Kind,
};

/// The gRPC face of the sku actors.
#[derive(Clone)]
pub struct InventoryApi {
    /// The sku actors.
    skus: Kind<SkuEntity>,
    /// Deadline of requests that did not pass through the deadline layer.
    default_deadline: Duration,
}

impl InventoryApi {
    /// A service sending to `skus`.
    pub fn new(skus: Kind<SkuEntity>, default_deadline: Duration) -> Self {
        Self {
            skus,
            default_deadline,
        }
    }
}

impl Respond for pb::Stock {
    type Message = pb::Stock;

    fn respond(self) -> Response<pb::Stock> {
        Response::new(self)
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    #[tracing::instrument(level = "debug", skip_all, fields(kind = "sku"))]
    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::Stock>, Status> {
        let r = request.get_ref();
        if !(0..=MAX_UNITS).contains(&r.on_hand) {
            return Err(Error::invalid(
                "on_hand",
                format!("is {}; it must be 0 to {MAX_UNITS}", r.on_hand),
            )
            .into());
        }
        let command = SetStock { on_hand: r.on_hand };
        let sku = r.sku.clone();
        api::answer(&self.skus, self.default_deadline, &request, &sku, command).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "sku"))]
    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::Stock>, Status> {
        let sku = request.get_ref().sku.clone();
        api::answer(&self.skus, self.default_deadline, &request, &sku, GetStock).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = "sku"))]
    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::Stock>, Status> {
        let r = request.get_ref();
        if r.delta == 0 || r.delta.unsigned_abs() > MAX_UNITS.unsigned_abs() {
            return Err(Error::invalid(
                "delta",
                format!(
                    "is {}; it must be non-zero and at most {MAX_UNITS} either way",
                    r.delta
                ),
            )
            .into());
        }
        let command = AdjustStock {
            delta: r.delta,
            request_id: api::request_id(&r.request_id, || pb::AdjustStockRequest {
                request_id: String::new(),
                ..r.clone()
            })?,
        };
        let sku = r.sku.clone();
        api::answer(&self.skus, self.default_deadline, &request, &sku, command).await
    }
}
