//! `demo-inventory`: owns stock and reservations, and consumes order events. Run several
//! instances on one data directory: they share the service's database file.
//!
//! `Reserve` and `Release` are idempotent per order, so the order service may retry them.
//! The event consumer is idempotent per event id (the relay delivers at least once) and its
//! span links to the span that produced the event, in the order's trace. Events arrive over
//! gRPC (`EventSink/Deliver`) or, with `--nats-url`, from a durable JetStream pull consumer;
//! both go through the same [`InventoryService::consume`].

use clap::Parser;
use demo_contracts::event_sink_server::{EventSink, EventSinkServer};
use demo_contracts::inventory_server::{Inventory, InventoryServer};
use demo_contracts::{
    Ack, Envelope, GetStockRequest, OrderEvent, ReleaseRequest, Released, Reservation, ReserveRequest, Stock,
};
use demo_kernel::{seed, ErrorCode};
use demo_platform::db::Database;
use demo_platform::faults::Faults;
use demo_platform::grpc::error;
use demo_platform::process::{CommonArgs, Process};
use demo_platform::{broker, propagation};
use opentelemetry::trace::TraceContextExt as _;
use prost::Message as _;
use rusqlite::{OptionalExtension, TransactionBehavior};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Stock, reservations and the order-event consumer of the demo.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Consume order events from NATS JetStream at this URL (e.g. `nats://127.0.0.1:4222`)
    /// as well as over gRPC; use it when order publishes there.
    #[arg(long, env = "DEMO_NATS_URL")]
    nats_url: Option<String>,
}

/// How an event reached the consumer (its `messaging.system`).
#[derive(Clone, Copy)]
enum Transport {
    /// `EventSink/Deliver`, straight from the order service's outbox relay.
    Grpc,
    /// A JetStream pull consumer.
    Nats,
}

impl Transport {
    fn system(self) -> &'static str {
        match self {
            Self::Grpc => "outbox",
            Self::Nats => "nats",
        }
    }
}

#[derive(Clone)]
struct InventoryService {
    db: Database,
    /// For the consumer's injected fault: a lost acknowledgement.
    faults: Faults,
}

/// How long JetStream waits before it redelivers an event that was not applied.
const REDELIVER_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Why a reservation is refused; decided inside the transaction.
enum Refusal {
    UnknownSku,
    OutOfStock { available: u32 },
}

fn release(tx: &rusqlite::Transaction<'_>, order_id: &str) -> rusqlite::Result<bool> {
    let reserved: Option<(String, u32)> = tx
        .query_row(
            "DELETE FROM reservations WHERE order_id = ?1 RETURNING sku, quantity",
            [order_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((sku, quantity)) = &reserved {
        tx.execute(
            "UPDATE stock SET available = available + ?2 WHERE sku = ?1",
            rusqlite::params![sku, quantity],
        )?;
    }
    Ok(reserved.is_some())
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id, sku = %request.get_ref().sku))]
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<Reservation>, Status> {
        let ReserveRequest {
            order_id,
            sku,
            quantity,
        } = request.into_inner();
        if order_id.is_empty() || quantity == 0 {
            return Err(error(
                ErrorCode::InvalidRequest,
                "a reservation needs an order id and a quantity",
            ));
        }
        let id = order_id.clone();
        let outcome = self
            .db
            .run("UPDATE", "stock", move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let available: Option<u32> = tx
                    .query_row("SELECT available FROM stock WHERE sku = ?1", [&sku], |row| {
                        row.get(0)
                    })
                    .optional()?;
                let already: bool = tx.query_row(
                    "SELECT count(*) FROM reservations WHERE order_id = ?1",
                    [&id],
                    |row| row.get(0),
                )?;
                let outcome = match available {
                    None => Err(Refusal::UnknownSku),
                    // A retry of a reservation that went through: answer as the first time.
                    Some(available) if already => Ok(available),
                    Some(available) if available < quantity => Err(Refusal::OutOfStock { available }),
                    Some(available) => {
                        tx.execute(
                            "UPDATE stock SET available = available - ?2 WHERE sku = ?1",
                            rusqlite::params![sku, quantity],
                        )?;
                        tx.execute(
                            "INSERT INTO reservations (order_id, sku, quantity) VALUES (?1, ?2, ?3)",
                            rusqlite::params![id, sku, quantity],
                        )?;
                        Ok(available - quantity)
                    }
                };
                tx.commit()?;
                Ok(outcome)
            })
            .await?;
        match outcome {
            Ok(remaining) => Ok(Response::new(Reservation { order_id, remaining })),
            Err(Refusal::UnknownSku) => Err(error(ErrorCode::UnknownSku, "no such SKU")),
            Err(Refusal::OutOfStock { available }) => Err(error(
                ErrorCode::OutOfStock,
                format!("only {available} left, {quantity} requested"),
            )),
        }
    }

    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id))]
    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<Released>, Status> {
        let order_id = request.into_inner().order_id;
        let released = self
            .db
            .run("DELETE", "reservations", move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let released = release(&tx, &order_id)?;
                tx.commit()?;
                Ok(released)
            })
            .await?;
        Ok(Response::new(Released { released }))
    }

    async fn get_stock(&self, request: Request<GetStockRequest>) -> Result<Response<Stock>, Status> {
        let sku = request.into_inner().sku;
        let key = sku.clone();
        let available = self
            .db
            .run("SELECT", "stock", move |c| {
                c.query_row("SELECT available FROM stock WHERE sku = ?1", [&key], |row| {
                    row.get(0)
                })
                .optional()
            })
            .await?
            .ok_or_else(|| error(ErrorCode::UnknownSku, format!("no SKU {sku:?}")))?;
        Ok(Response::new(Stock { sku, available }))
    }
}

impl InventoryService {
    /// Records demand per SKU from OrderCreated, and on OrderCancelled also releases the
    /// order's reservation — the guaranteed half of the saga's compensation. Each event is
    /// applied once, in the same transaction that records its id; answers whether it was a
    /// duplicate. An injected lost acknowledgement (`--fault-lost-ack-rate`) fails the delivery
    /// after the transaction committed, so the event comes again and is found a duplicate.
    async fn consume(&self, envelope: Envelope, transport: Transport) -> Result<bool, Status> {
        let producer = propagation::extract_map(&envelope.headers);
        let span = tracing::info_span!(
            "consume",
            otel.name = format!("{} process", envelope.topic),
            otel.kind = "consumer",
            messaging.system = transport.system(),
            messaging.operation.type = "process",
            messaging.destination.name = %envelope.topic,
            messaging.message.id = %envelope.event_id,
            messaging.message.type = %envelope.event_type,
            messaging.consumer.duplicate = tracing::field::Empty,
            order.id = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // A link, not a parent: the event is processed in its own trace (the relay's, or a new
        // one from JetStream), and the link leads back to the order request that produced it.
        let producer_span = producer.span().span_context().clone();
        if producer_span.is_valid() {
            span.add_link(producer_span);
        }
        let event = OrderEvent::decode(envelope.payload.as_slice()).map_err(|e| {
            error(
                ErrorCode::InvalidRequest,
                format!("bad {} payload: {e}", envelope.event_type),
            )
        })?;
        span.record("order.id", event.order_id.as_str());
        let (event_id, event_type) = (envelope.event_id, envelope.event_type);
        let applied = self
            .db
            .run("INSERT", "processed_events", move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let first = tx.execute(
                    "INSERT OR IGNORE INTO processed_events (event_id, event_type) VALUES (?1, ?2)",
                    [&event_id, &event_type],
                )? == 1;
                if first {
                    let (ordered, cancelled) = match event_type.as_str() {
                        "OrderCancelled" => {
                            release(&tx, &event.order_id)?;
                            (0, event.quantity)
                        }
                        _ => (event.quantity, 0),
                    };
                    tx.execute(
                        "INSERT INTO demand (sku, ordered, cancelled) VALUES (?1, ?2, ?3)
                         ON CONFLICT (sku) DO UPDATE SET ordered = ordered + ?2, cancelled = cancelled + ?3",
                        rusqlite::params![event.sku, ordered, cancelled],
                    )?;
                }
                tx.commit()?;
                Ok(first)
            })
            .instrument(span.clone())
            .await?;
        span.record("messaging.consumer.duplicate", !applied);
        if span.in_scope(|| self.faults.lose_ack()) {
            span.record("otel.status_code", "error");
            return Err(Status::unavailable("acknowledgement lost (injected fault)"));
        }
        Ok(!applied)
    }

    /// Consumes events from the durable JetStream pull consumer, forever: each message is
    /// acknowledged after its transaction commits; one that fails is negatively acknowledged
    /// and redelivered by JetStream after [`REDELIVER_AFTER`], one that can never be applied is
    /// terminated.
    async fn consume_nats(self, stream: async_nats::jetstream::stream::Stream) -> anyhow::Result<()> {
        use async_nats::jetstream::{consumer::pull, AckKind};
        use futures_util::StreamExt as _;
        let consumer = stream
            .get_or_create_consumer(
                broker::CONSUMER,
                pull::Config {
                    durable_name: Some(broker::CONSUMER.to_string()),
                    ..Default::default()
                },
            )
            .await?;
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!("nats: cannot receive: {e}");
                    continue;
                }
            };
            let ack = match broker::envelope(&message) {
                None => {
                    tracing::error!("nats: message on {} without event headers", message.subject);
                    AckKind::Term
                }
                Some(envelope) => match self.consume(envelope, Transport::Nats).await {
                    Ok(_) => AckKind::Ack,
                    Err(status) if status.code() == tonic::Code::InvalidArgument => AckKind::Term,
                    Err(status) => {
                        tracing::warn!("nats: event not applied, will be redelivered: {status}");
                        AckKind::Nak(Some(REDELIVER_AFTER))
                    }
                },
            };
            if let Err(e) = message.ack_with(ack).await {
                tracing::warn!("nats: cannot acknowledge: {e}");
            }
        }
        anyhow::bail!("the JetStream consumer ended")
    }
}

#[tonic::async_trait]
impl EventSink for InventoryService {
    async fn deliver(&self, request: Request<Envelope>) -> Result<Response<Ack>, Status> {
        let duplicate = self.consume(request.into_inner(), Transport::Grpc).await?;
        Ok(Response::new(Ack { duplicate }))
    }
}

fn schema() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0));
         CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY, sku TEXT NOT NULL, quantity INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS processed_events (
             event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL,
             processed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
         CREATE TABLE IF NOT EXISTS demand (sku TEXT PRIMARY KEY, ordered INTEGER NOT NULL, cancelled INTEGER NOT NULL);\n",
    );
    for (sku, stock) in seed::SKUS {
        sql.push_str(&format!(
            "INSERT OR IGNORE INTO stock VALUES ('{sku}', {stock});\n"
        ));
    }
    sql
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let process = Process::start("inventory", args.common).await?;
    let db = Database::open(&process.args.data_dir, "inventory.sqlite", &schema())?;
    let service = InventoryService {
        db,
        faults: process.faults.clone(),
    };
    if let Some(url) = &args.nats_url {
        let (_, stream) = broker::connect(url, "orders").await?;
        let consumer = service.clone();
        tokio::spawn(async move {
            if let Err(e) = consumer.consume_nats(stream).await {
                tracing::error!("nats: {e:#}");
            }
        });
    }
    let routes = tonic::service::Routes::new(InventoryServer::new(service.clone()))
        .add_service(EventSinkServer::new(service));
    process.serve_grpc(routes).await
}
