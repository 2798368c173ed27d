//! Assembling session-svc: the store client, the actor kinds, the gRPC services, the drain.

use std::{future::Future, sync::Arc};

use proto::session::v1::{
    admin_service_server::AdminServiceServer, cart_service_server::CartServiceServer,
    inventory_service_server::InventoryServiceServer, job_service_server::JobServiceServer,
    peer_service_server::PeerServiceServer, todo_service_server::TodoServiceServer,
};
use tokio::net::TcpListener;
use tonic::transport::ServerTlsConfig;

use crate::{
    admin::{AdminApi, AdminAuth},
    cart::{CartApi, CartEntity, Inventory},
    cluster::{self, Cluster},
    config::Config,
    domain::Catalog,
    inventory::{InventoryApi, SkuEntity},
    jobs::{JobApi, Jobs},
    metrics::SessionMetrics,
    runtime::{Actors, Kind, Store, batcher::BatchStats},
    sweeper::{self, Sweeper},
    todo::{TodoApi, TodoEntity},
};

/// Full names of the services, as health checks and reflection know them.
pub const SERVICE_NAMES: [&str; 5] = [
    "session.v1.CartService",
    "session.v1.TodoService",
    "session.v1.InventoryService",
    "session.v1.JobService",
    "session.v1.AdminService",
];

/// A configured session-svc, ready to serve.
pub struct SessionServer {
    /// The settings it was built from.
    config: Config,
    /// Every kind's actors: cap, eviction, admin.
    actors: Arc<Actors>,
    /// Shopping sessions.
    carts: Kind<CartEntity>,
    /// To-do lists.
    todos: Kind<TodoEntity>,
    /// Stock, one actor per sku.
    skus: Kind<SkuEntity>,
    /// What the store write batcher has sent (`None`: writes are not batched).
    store_batches: Option<Arc<BatchStats>>,
    /// TLS on the public port, checked at start-up (`None`: plaintext).
    tls: Option<ServerTlsConfig>,
    /// Several replicas: membership, placement, leases (`None`: a single replica).
    cluster: Option<Arc<Cluster>>,
}

impl SessionServer {
    /// Builds the runtime from `config`, TLS files read and checked. Fails with a message
    /// naming the bad setting.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let catalog = Catalog::parse(&config.discounts)
            .map_err(|e| anyhow::anyhow!("--discounts / SESSION_DISCOUNTS: {e}"))?;
        let tls = config
            .server_tls()
            .map_err(|e| anyhow::anyhow!("--tls-cert / --tls-key: {e}"))?;
        let store_tls = config.store_tls().map_err(anyhow::Error::msg)?;
        let store = Store::connect_lazy(&config.store_addr, store_tls, config.store_batching())
            .map_err(|e| anyhow::anyhow!("--store-addr / SESSION_STORE_ADDR: {e}"))?;
        let cluster = config
            .cluster()
            .map_err(anyhow::Error::msg)?
            .map(|settings| Cluster::new(settings, store.clone()));
        let mut server = Self::with_store(config, catalog, store);
        server.tls = tls;
        if let Some(cluster) = cluster {
            server.join(cluster);
        }
        Ok(server)
    }

    /// Builds the runtime over a given store (the in-memory one in benchmarks). Its own port
    /// is plaintext: TLS is read from the configuration by [`SessionServer::new`].
    pub fn with_store(config: Config, catalog: Catalog, store: Store) -> Self {
        let actors =
            Actors::with_watchers(config.max_actors as usize, config.max_watchers as usize);
        let store_batches = store.batch_stats();
        let todos = Kind::new(
            TodoEntity,
            store.clone(),
            config.runtime_settings(config.todo_idle_timeout),
            actors.clone(),
        );
        let skus = Kind::new(
            SkuEntity,
            store.clone(),
            config.runtime_settings(config.sku_idle_timeout),
            actors.clone(),
        );
        let carts = Kind::new(
            CartEntity {
                catalog,
                log_limit: config.log_limit as usize,
                events_per_cart: u64::from(config.events_per_cart),
                ttl: Some(config.cart_ttl),
                inventory: Some(Inventory(skus.clone())),
            },
            store,
            config.runtime_settings(config.cart_idle_timeout),
            actors.clone(),
        );
        Self {
            config,
            actors,
            carts,
            todos,
            skus,
            store_batches,
            tls: None,
            cluster: None,
        }
    }

    /// Makes this server one replica of `cluster`: every kind serves only the shards whose
    /// lease this replica holds, and a shard that leaves stops its actors.
    fn join(&mut self, cluster: Arc<Cluster>) {
        self.carts.join(cluster.clone());
        self.todos.join(cluster.clone());
        self.skus.join(cluster.clone());
        let actors = self.actors.clone();
        let shards = cluster.settings().shards;
        cluster.on_lost(Box::new(move |shard| {
            actors.passivate_where(&|kind, key| cluster::shard_of(shards, kind, key) == shard)
        }));
        self.cluster = Some(cluster);
    }

    /// The cart actors (for in-process benchmarks).
    pub fn carts(&self) -> &Kind<CartEntity> {
        &self.carts
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: health NOT_SERVING,
    /// watch streams end, the listener closes, in-flight requests finish, actors stop.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            actors,
            carts,
            todos,
            skus,
            store_batches,
            tls,
            cluster,
        } = self;
        let deadline = config.default_deadline;
        let sweep = Arc::new(sweeper::Progress::default());
        let jobs = Jobs::new(todos.store().clone(), todos.clone(), config.job_settings());
        let kit::grpc::Base {
            routes,
            health,
            health_only,
        } = kit::grpc::base_routes(&[proto::FILE_DESCRIPTOR_SET], &SERVICE_NAMES)?;
        let _health_port = kit::grpc::spawn_health_port(config.health_listen, health_only).await?;
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let routes = routes
            .add_service(CartServiceServer::new(CartApi::new(
                carts.clone(),
                deadline,
            )))
            .add_service(TodoServiceServer::new(TodoApi::new(
                todos.clone(),
                deadline,
            )))
            .add_service(InventoryServiceServer::new(InventoryApi::new(
                skus.clone(),
                deadline,
            )))
            .add_service(JobServiceServer::new(JobApi::new(
                jobs.clone(),
                deadline,
                todos.draining(),
            )))
            .add_service(AdminServiceServer::with_interceptor(
                AdminApi::new(
                    actors.clone(),
                    sweep.clone(),
                    carts.store().latency().clone(),
                    jobs.clone(),
                )
                .in_cluster(cluster.clone()),
                AdminAuth::new(config.admin_token.clone()),
            ));

        // Replicas call each other's sku actors; a single replica has no one to serve that.
        let routes = match &cluster {
            Some(_) => routes.add_service(PeerServiceServer::new(cluster::peer::PeerApi::new(
                skus.clone(),
                deadline,
            ))),
            None => routes,
        };

        let connections = kit::conn::Connections::new(config.connection_limits().within_fd_limit());
        let mut registry = prometheus_client::registry::Registry::default();
        let rpc_metrics =
            kit::metrics::RpcMetrics::register(&mut registry, &[proto::FILE_DESCRIPTOR_SET]);
        registry.register_collector(Box::new(SessionMetrics::new(
            actors.clone(),
            store_batches,
            sweep.clone(),
            connections.clone(),
            cluster.clone(),
        )));
        let _metrics = kit::metrics::spawn(config.metrics_listen, Arc::new(registry)).await?;

        let (stop_cluster, cluster_stopped) = tokio::sync::watch::channel(false);
        if let Some(cluster) = &cluster {
            tokio::spawn(cluster.clone().run_membership(cluster_stopped.clone()));
            tokio::spawn(cluster.clone().run_leases(cluster_stopped));
        }
        let sweeper = Sweeper::new(carts.clone(), todos.clone(), config.sweep_settings(), sweep);
        let sweeping = tokio::spawn(sweeper.run(carts.draining()));
        let recovering = tokio::spawn(jobs.clone().recover_and_retain());

        tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), store = %config.store_addr, "session-svc serving");
        let drain = {
            let (carts, todos, skus) = (carts.clone(), todos.clone(), skus.clone());
            let cluster = cluster.clone();
            async move {
                shutdown.await;
                if let Some(cluster) = &cluster {
                    cluster.begin_drain();
                }
                carts.begin_drain();
                todos.begin_drain();
                skus.begin_drain();
            }
        };
        let options = kit::grpc::ServeOptions {
            service_names: &SERVICE_NAMES,
            error_domain: crate::error::ERROR_DOMAIN,
            rpc_metrics,
            default_deadline: deadline,
            grace: config.grace_period,
            tls,
            connections,
            max_concurrent_streams: config.max_concurrent_streams,
            keepalive_interval: config.keepalive_interval,
            forward: cluster::forward::layer(cluster.as_ref()),
        };
        let served = kit::grpc::serve(routes, listener, health, &options, drain).await;
        // Jobs stopped sending when the drain began; their last checkpoint needs the store.
        jobs.stopped(config.grace_period).await;
        recovering.abort();
        sweeping.abort();
        carts.close();
        todos.close();
        skus.close();
        // Every actor has stopped and its writes are durable: the other replicas may take
        // this one's shards now rather than after the lease length.
        if let Some(cluster) = &cluster {
            cluster.release_all().await;
        }
        let _ = stop_cluster.send(true);
        served?;
        tracing::info!(live_actors = actors.live(), "session-svc stopped");
        Ok(())
    }
}
