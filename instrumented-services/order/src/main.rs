//! `demo-order`: places orders and lists them.
//!
//! `PlaceOrder` is a saga over `inventory`: the order is stored PENDING together with its
//! OrderCreated event (transactional outbox), stock is reserved, and the order is CONFIRMED —
//! or, when the reservation fails or times out, compensated: the reservation is released and
//! the order CANCELLED with an OrderCancelled event, all under a `saga compensate` span. The
//! [`outbox`] relay delivers events to inventory at least once.

mod outbox;
mod saga;

use std::sync::Arc;

use clap::Parser;
use demo_contracts::orders_server::{Orders, OrdersServer};
use demo_contracts::users_client::UsersClient;
use demo_contracts::{ListOrdersRequest, ListOrdersResponse, Order, PlaceOrderRequest};
use demo_kernel::{CustomerId, ErrorCode};
use demo_platform::db::Database;
use demo_platform::grpc::error;
use demo_platform::process::{CommonArgs, Process};
use demo_platform::resilience::{CallPolicy, Downstream};
use tonic::{Request, Response, Status};

/// Orders of the demo: a saga per order, events through an outbox.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// How often the outbox relay looks for undelivered events, in milliseconds.
    #[arg(long, env = "DEMO_OUTBOX_INTERVAL_MS", default_value_t = 250)]
    outbox_interval_ms: u64,
    /// Publish order events to NATS JetStream at this URL (e.g. `nats://127.0.0.1:4222`)
    /// instead of delivering them to inventory over gRPC.
    #[arg(long, env = "DEMO_NATS_URL")]
    nats_url: Option<String>,
}

/// The most units one order may ask for.
const MAX_QUANTITY: u32 = 100;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    created_at_unix_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, created_at_unix_ms);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    headers TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at_unix_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at_unix_ms, seq);";

struct OrderService {
    db: Database,
    users: Arc<Downstream>,
    inventory: Arc<Downstream>,
}

fn customer(text: &str) -> Result<CustomerId, Status> {
    text.parse()
        .map_err(|e: demo_kernel::InvalidCustomerId| error(ErrorCode::InvalidRequest, e.to_string()))
}

#[tonic::async_trait]
impl Orders for OrderService {
    async fn place_order(&self, request: Request<PlaceOrderRequest>) -> Result<Response<Order>, Status> {
        let request = request.into_inner();
        let customer_id = customer(&request.customer_id)?;
        if request.sku.is_empty() || !(1..=MAX_QUANTITY).contains(&request.quantity) {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!("an order needs a sku and a quantity from 1 to {MAX_QUANTITY}"),
            ));
        }
        // The customer must exist (and a real shop would read the shipping address here).
        let profile_request = demo_contracts::GetProfileRequest {
            customer_id: customer_id.to_string(),
        };
        self.users
            .call("Users/GetProfile", |channel| {
                let request = profile_request.clone();
                async move { UsersClient::new(channel).get_profile(request).await }
            })
            .await
            .map_err(|e| e.to_status())?;
        let saga = saga::PlaceOrder {
            db: &self.db,
            inventory: &self.inventory,
        };
        saga.run(customer_id, request.sku, request.quantity)
            .await
            .map(Response::new)
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let customer_id = customer(&request.into_inner().customer_id)?.to_string();
        let orders = self
            .db
            .run("SELECT", "orders", move |c| {
                let mut statement = c.prepare(
                    "SELECT order_id, customer_id, sku, quantity, status, created_at_unix_ms FROM orders
                     WHERE customer_id = ?1 ORDER BY created_at_unix_ms DESC LIMIT 50",
                )?;
                let rows = statement.query_map([&customer_id], |row| {
                    Ok(Order {
                        order_id: row.get(0)?,
                        customer_id: row.get(1)?,
                        sku: row.get(2)?,
                        quantity: row.get(3)?,
                        status: row.get(4)?,
                        created_at_unix_ms: row.get::<_, i64>(5)? as u64,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(Response::new(ListOrdersResponse { orders }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let process = Process::start("order", args.common).await?;
    let db = Database::open(&process.args.data_dir, "order.sqlite", SCHEMA)?;
    let inventory = Downstream::new("inventory", process.resolver.clone(), CallPolicy::default());
    let users = Downstream::new("user", process.resolver.clone(), CallPolicy::default());
    let transport = match &args.nats_url {
        Some(url) => outbox::Transport::nats(url).await?,
        None => outbox::Transport::Grpc(inventory.clone()),
    };
    tokio::spawn(outbox::relay(
        db.clone(),
        transport,
        std::time::Duration::from_millis(args.outbox_interval_ms),
    ));
    let service = OrderService { db, users, inventory };
    process
        .serve_grpc(tonic::service::Routes::new(OrdersServer::new(service)))
        .await
}
