//! `sku-adjust`: AdjustStock through session-svc's sku actors, on one hot sku (every request
//! queues in one actor's mailbox) and spread over many skus.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use proto::session::v1::{
    AdjustStockRequest, SetStockRequest, inventory_service_client::InventoryServiceClient,
};
use tests::{
    load::{self, Call, LoadReport},
    store::{STORE_BINARY, STORE_BINARY_ENV},
};
use tonic::transport::Channel;

use crate::{
    LoadArgs,
    measure::{Target, WindowSample, measure_runs, sample_window},
    report::{
        Layout, WRITE_COLUMNS, print_header_end, print_header_start, print_summary, write_cells,
    },
    servers::{SESSION_BINARY, connect, require_binaries, spawn_metered_stack},
};

/// Units each sku starts with: more than any run removes.
const STOCK: i64 = 1_000_000_000;

#[derive(Debug, Args)]
pub struct SkuAdjust {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Skus the spread-out target rotates over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub skus: u32,
}

/// Where the adjustments go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spread {
    /// Every request to one sku: one actor, one mailbox, one write at a time.
    HotSku,
    /// Requests rotate over `--skus` skus.
    ManySkus,
}

const SPREADS: [Spread; 2] = [Spread::HotSku, Spread::ManySkus];

impl Target for Spread {
    const PAIR: [Self; 2] = [Spread::ManySkus, Spread::HotSku];

    fn label(self) -> &'static str {
        match self {
            Spread::HotSku => "one hot sku",
            Spread::ManySkus => "many skus",
        }
    }
}

const LAYOUT: Layout<Spread> = Layout {
    target_column: "skus",
    extra_columns: WRITE_COLUMNS,
    extra_cells: write_cells,
    summary_columns: &[],
    request: "AdjustStock",
    ratio: "Many skus / one hot sku",
    ratio_decimals: 2,
    ratio_unit: "×",
};

pub async fn run(args: SkuAdjust) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV), SESSION_BINARY])?;
    print_header(&args);
    let results = measure_runs("sku-adjust", args.load.runs, &SPREADS, &LAYOUT, |spread| {
        drive(&args, spread)
    })
    .await?;
    print_summary(&LAYOUT, args.load.runs, &SPREADS, &results);
    Ok(())
}

/// Starts a fresh store-svc and session-svc, sets the stock of the skus `spread` uses, and
/// drives AdjustStock(-1), each with a unique request id, at them.
async fn drive(args: &SkuAdjust, spread: Spread) -> anyhow::Result<(LoadReport, WindowSample)> {
    let (store, session, metrics) = spawn_metered_stack(None, &[]).await?;
    let clients: Vec<InventoryServiceClient<Channel>> = connect(&session, args.load.connections)
        .await?
        .into_iter()
        .map(InventoryServiceClient::new)
        .collect();
    let skus = match spread {
        Spread::HotSku => 1,
        Spread::ManySkus => args.skus,
    };
    let mut setter = clients[0].clone();
    for sku in 0..skus {
        setter
            .set_stock(SetStockRequest {
                sku: format!("sku-{sku}"),
                on_hand: STOCK,
            })
            .await
            .context("setting the stock")?;
    }
    let clients = Arc::new(clients);
    let config = args.load.config();
    let request = move |call: Call| {
        let mut client = clients[call.task % clients.len()].clone();
        let sku = (call.task as u64 + call.seq) % u64::from(skus);
        let adjust = AdjustStockRequest {
            sku: format!("sku-{sku}"),
            delta: -1,
            request_id: format!("loadgen-{}-{}", call.task, call.seq),
        };
        async move { client.adjust_stock(adjust).await.map(drop) }
    };
    let pids = [session.pid(), store.pid()];
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, &pids, &metrics),
    ))
}

fn print_header(args: &SkuAdjust) {
    print_header_start(
        "session-svc stock: AdjustStock on one hot sku vs spread over many skus",
        "session-svc, store-svc and loadgen",
    );
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections, each request an \
         AdjustStock of -1 with a unique request_id (durable before OK); one hot sku: every \
         request to the same sku actor; many skus: rotating over {} skus; {:?} warm-up, {:?} \
         measured; {} run(s), fresh servers per run and target (store-svc and session-svc on \
         their defaults)",
        args.load.clients,
        args.load.connections,
        args.skus,
        args.load.warmup,
        args.load.duration,
        args.load.runs
    );
    print_header_end();
}
