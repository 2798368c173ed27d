//! Which calls are placed by their key, and where: the [`kit::forward::Router`] of
//! session-svc.
//!
//! Every method of the cart, to-do and inventory services names its actor's key in field 1
//! of its request; admin GetActor and KillActor name the kind in field 1 and the key in field
//! 2; an import job's first message names its list in field 1. Everything else (ListActors,
//! GetStats, the job queries) is answered by the replica it reaches.

use std::sync::{Arc, atomic::Ordering};

use kit::forward::{Router, Target};
use prost::Message as _;

use super::{Cluster, Placement};
use crate::{
    cart::CartEntity, inventory::SkuEntity, jobs::JOB_KIND, runtime::Entity as _, todo::TodoEntity,
};

/// How a method's request names its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyed {
    /// This kind, the key in field 1.
    Kind(&'static str),
    /// Kind in field 1, key in field 2 (admin).
    KindAndKey,
}

/// Field 1 as a string.
#[derive(Clone, PartialEq, prost::Message)]
struct Field1 {
    #[prost(string, tag = "1")]
    one: String,
}

/// Fields 1 and 2 as strings.
#[derive(Clone, PartialEq, prost::Message)]
struct Fields12 {
    #[prost(string, tag = "1")]
    one: String,
    #[prost(string, tag = "2")]
    two: String,
}

/// How the request of `path` names its actor, if it does.
fn keyed(path: &str) -> Option<Keyed> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    match service {
        "session.v1.CartService" => Some(Keyed::Kind(CartEntity::KIND)),
        "session.v1.TodoService" => Some(Keyed::Kind(TodoEntity::KIND)),
        "session.v1.InventoryService" => Some(Keyed::Kind(SkuEntity::KIND)),
        "session.v1.PeerService" => Some(Keyed::Kind(SkuEntity::KIND)),
        // An import runs where its list is served, under an id placed there too
        // (`Jobs::placed_id`), so the calls naming the id find it.
        "session.v1.JobService" if method == "ImportEntries" => Some(Keyed::Kind(TodoEntity::KIND)),
        "session.v1.JobService" if matches!(method, "GetJob" | "WatchJob" | "CancelJob") => {
            Some(Keyed::Kind(JOB_KIND))
        }
        "session.v1.AdminService" if matches!(method, "GetActor" | "KillActor") => {
            Some(Keyed::KindAndKey)
        }
        _ => None,
    }
}

impl Router for Cluster {
    fn routed(&self, path: &str) -> bool {
        keyed(path).is_some()
    }

    fn route(&self, path: &str, message: &[u8]) -> Option<Target> {
        // A request that does not decode is served here, where it gets its precise error.
        let placement = match keyed(path)? {
            Keyed::Kind(kind) => {
                let key = Field1::decode(message).ok()?.one;
                self.placement(kind, &key)
            }
            Keyed::KindAndKey => {
                let Fields12 { one, two } = Fields12::decode(message).ok()?;
                self.placement(&one, &two)
            }
        };
        match placement {
            Placement::Local => None,
            Placement::Remote(addr) => Some(Target {
                channel: self.channel(&addr),
                addr,
            }),
        }
    }

    fn forwarded(&self, _path: &str, _to: &str) {
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    }
}

/// The forwarding layer of a replica in `cluster` (none: a single replica forwards nothing).
pub fn layer(cluster: Option<&Arc<Cluster>>) -> kit::forward::ForwardLayer {
    match cluster {
        Some(cluster) => {
            let router: Arc<dyn Router> = cluster.clone();
            kit::forward::ForwardLayer::new(Some(router), cluster.me())
        }
        None => kit::forward::ForwardLayer::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyed_method_is_known_and_others_are_not() {
        assert_eq!(
            keyed("/session.v1.CartService/AddItem"),
            Some(Keyed::Kind("cart"))
        );
        assert_eq!(
            keyed("/session.v1.TodoService/WatchList"),
            Some(Keyed::Kind("todo"))
        );
        assert_eq!(
            keyed("/session.v1.InventoryService/GetStock"),
            Some(Keyed::Kind("sku"))
        );
        assert_eq!(
            keyed("/session.v1.AdminService/GetActor"),
            Some(Keyed::KindAndKey)
        );
        assert_eq!(keyed("/session.v1.AdminService/GetStats"), None);
        assert_eq!(
            keyed("/session.v1.JobService/GetJob"),
            Some(Keyed::Kind("job"))
        );
        assert_eq!(keyed("/session.v1.JobService/ListJobs"), None);
        assert_eq!(keyed("/grpc.health.v1.Health/Check"), None);
        assert_eq!(keyed("nonsense"), None);
    }

    #[test]
    fn the_key_is_read_from_the_real_request_messages() {
        let add = proto::session::v1::AddItemRequest {
            key: "alice".into(),
            sku: "apple".into(),
            quantity: 2,
            ..Default::default()
        };
        assert_eq!(
            Field1::decode(add.encode_to_vec().as_slice()).unwrap().one,
            "alice"
        );
        let set = proto::session::v1::SetStockRequest {
            sku: "apple".into(),
            on_hand: 7,
        };
        assert_eq!(
            Field1::decode(set.encode_to_vec().as_slice()).unwrap().one,
            "apple"
        );
        let get = proto::session::v1::GetActorRequest {
            kind: "cart".into(),
            key: "bob".into(),
        };
        let both = Fields12::decode(get.encode_to_vec().as_slice()).unwrap();
        assert_eq!((both.one.as_str(), both.two.as_str()), ("cart", "bob"));
    }
}
