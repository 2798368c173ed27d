//! `cart-reserve`: AddItem of tracked skus, each of which reserves a unit at the sku's actor
//! before the cart commits (two durable commits per request), on one hot sku and spread over
//! many; and, as the baseline measured in the same run, the same AddItems of untracked skus
//! (no stock set: the cart's commit alone).

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use proto::session::v1::{SetStockRequest, inventory_service_client::InventoryServiceClient};
use tests::{
    load::{self, Call, LoadReport},
    store::{STORE_BINARY, STORE_BINARY_ENV},
};
use tonic::transport::Channel;

use crate::{
    LoadArgs,
    carts::{CartApi, add_item_request, start_session},
    measure::{Target, WindowSample, measure_runs, sample_window},
    report::{
        Layout, WRITE_COLUMNS, print_header_end, print_header_start, print_summary, write_cells,
    },
    servers::{SESSION_BINARY, connect, require_binaries, spawn_metered_stack},
};

/// Units each tracked sku starts with: more than any run reserves.
const STOCK: i64 = 1_000_000_000;
/// Lines one client's cart takes when spread: carts stay small, as shoppers' do.
const LINES_PER_CART: u64 = 16;

#[derive(Debug, Args)]
pub struct CartReserve {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Skus the spread-out targets rotate over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub skus: u32,
}

/// Where the AddItems go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spread {
    /// Every request reserves at one sku: one actor, one mailbox, one write at a time.
    HotSku,
    /// Requests reserve at `--skus` skus.
    ManySkus,
    /// The same spread over skus without stock: no reservation, the baseline.
    Untracked,
}

const SPREADS: [Spread; 3] = [Spread::HotSku, Spread::ManySkus, Spread::Untracked];

impl Target for Spread {
    const PAIR: [Self; 2] = [Spread::ManySkus, Spread::HotSku];

    fn label(self) -> &'static str {
        match self {
            Spread::HotSku => "one hot sku",
            Spread::ManySkus => "many skus",
            Spread::Untracked => "many untracked skus",
        }
    }
}

const LAYOUT: Layout<Spread> = Layout {
    target_column: "skus",
    extra_columns: WRITE_COLUMNS,
    extra_cells: write_cells,
    summary_columns: &[],
    request: "AddItem",
    ratio: "Many skus / one hot sku",
    ratio_decimals: 2,
    ratio_unit: "×",
};

pub async fn run(args: CartReserve) -> anyhow::Result<()> {
    require_binaries(&[(STORE_BINARY, STORE_BINARY_ENV), SESSION_BINARY])?;
    print_header(&args);
    let results = measure_runs(
        "cart-reserve",
        args.load.runs,
        &SPREADS,
        &LAYOUT,
        |spread| drive(&args, spread),
    )
    .await?;
    print_summary(&LAYOUT, args.load.runs, &SPREADS, &results);
    Ok(())
}

/// Starts a fresh store-svc and session-svc, sets the stock of the skus `spread` tracks,
/// starts one cart per client, and drives AddItem of one unit, each with a unique request id.
async fn drive(args: &CartReserve, spread: Spread) -> anyhow::Result<(LoadReport, WindowSample)> {
    let (store, session, metrics) = spawn_metered_stack(None, &[]).await?;
    let channels = connect(&session, args.load.connections).await?;
    let carts: Vec<CartApi> = channels.iter().cloned().map(CartApi::new).collect();
    let skus = match spread {
        Spread::HotSku => 1,
        Spread::ManySkus | Spread::Untracked => u64::from(args.skus),
    };
    if spread != Spread::Untracked {
        let mut setter = InventoryServiceClient::<Channel>::new(channels[0].clone());
        for sku in 0..skus {
            setter
                .set_stock(SetStockRequest {
                    sku: format!("SKU-{sku:03}"),
                    on_hand: STOCK,
                })
                .await
                .context("setting the stock")?;
        }
    }
    let mut keys = Vec::new();
    for client in 0..args.load.clients as usize {
        keys.push(start_session(&mut carts[client % carts.len()].clone(), client).await?);
    }
    let (carts, keys) = (Arc::new(carts), Arc::new(keys));
    let config = args.load.config();
    let request = move |call: Call| {
        let mut client = carts[call.task % carts.len()].clone();
        // Each client's cart rotates over its own few skus; together the clients cover them all.
        let sku = (call.task as u64 * LINES_PER_CART + call.seq % LINES_PER_CART) % skus;
        let mut add = add_item_request(&keys[call.task], sku as u32);
        add.request_id = format!("loadgen-{}-{}", call.task, call.seq);
        async move { client.add_item(add).await.map(drop) }
    };
    let pids = [session.pid(), store.pid()];
    Ok(tokio::join!(
        load::run_closed_loop(&config, request),
        sample_window(&config, &pids, &metrics),
    ))
}

fn print_header(args: &CartReserve) {
    print_header_start(
        "session-svc reservations: AddItem of tracked skus on one hot sku vs many, vs untracked",
        "session-svc, store-svc and loadgen",
    );
    println!(
        "- load: {} closed-loop clients over {} HTTP/2 connections, one cart each, each request \
         an AddItem of one unit with a unique request_id (durable before OK). Tracked: the cart \
         first reserves at the sku's actor (a durable commit of the sku and its hold), then \
         commits itself. One hot sku: every reservation at one sku actor; many skus: each \
         client's cart rotates over {LINES_PER_CART} of {} skus; untracked: the same spread with \
         no stock set, so no reservation (the baseline); {:?} warm-up, {:?} measured; {} \
         run(s), fresh servers per run and target",
        args.load.clients,
        args.load.connections,
        args.skus,
        args.load.warmup,
        args.load.duration,
        args.load.runs
    );
    print_header_end();
}
