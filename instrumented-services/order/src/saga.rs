//! The PlaceOrder saga: each step and the compensation are spans, so a trace shows which step
//! failed and what was undone.

use std::time::{SystemTime, UNIX_EPOCH};

use demo_contracts::inventory_client::InventoryClient;
use demo_contracts::{Order, OrderEvent, ReleaseRequest, ReserveRequest};
use demo_kernel::CustomerId;
use demo_platform::db::Database;
use demo_platform::resilience::{CallError, Downstream};
use tonic::Status;
use tracing::Instrument as _;

use crate::outbox;

pub struct PlaceOrder<'a> {
    pub db: &'a Database,
    pub inventory: &'a Downstream,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_order_id() -> String {
    format!("ORD-{:016x}", fastrand::u64(..))
}

impl PlaceOrder<'_> {
    pub async fn run(self, customer_id: CustomerId, sku: String, quantity: u32) -> Result<Order, Status> {
        let order = Order {
            order_id: new_order_id(),
            customer_id: customer_id.to_string(),
            sku,
            quantity,
            status: "PENDING".into(),
            created_at_unix_ms: now_ms(),
        };
        let span = tracing::info_span!(
            "saga",
            otel.name = "saga PlaceOrder",
            saga.name = "PlaceOrder",
            order.id = %order.order_id,
            saga.outcome = tracing::field::Empty,
        );
        self.steps(order).instrument(span).await
    }

    async fn steps(self, mut order: Order) -> Result<Order, Status> {
        // Step 1: the order and its OrderCreated event, in one transaction.
        let event = outbox::Event::new("OrderCreated", event_of(&order));
        let pending = order.clone();
        self.db
            .run("INSERT", "orders", move |c| {
                let tx = c.transaction()?;
                tx.execute(
                    "INSERT INTO orders (order_id, customer_id, sku, quantity, status, created_at_unix_ms)
                     VALUES (?1, ?2, ?3, ?4, 'PENDING', ?5)",
                    rusqlite::params![
                        pending.order_id,
                        pending.customer_id,
                        pending.sku,
                        pending.quantity,
                        pending.created_at_unix_ms as i64
                    ],
                )?;
                event.append(&tx)?;
                tx.commit()
            })
            .await?;

        // Step 2: reserve the stock.
        let reserve = ReserveRequest {
            order_id: order.order_id.clone(),
            sku: order.sku.clone(),
            quantity: order.quantity,
        };
        let reserved = self
            .inventory
            .call("Inventory/Reserve", |channel| {
                let request = reserve.clone();
                async move { InventoryClient::new(channel).reserve(request).await }
            })
            .instrument(tracing::info_span!(
                "saga.step",
                otel.name = "saga step ReserveStock",
                saga.step = "ReserveStock"
            ))
            .await;
        let span = tracing::Span::current();
        match reserved {
            Ok(_) => {
                // Step 3: confirm.
                order.status = "CONFIRMED".into();
                self.set_status(&order.order_id, "CONFIRMED", None).await?;
                span.record("saga.outcome", "confirmed");
                Ok(order)
            }
            Err(failure) => {
                span.record("saga.outcome", "compensated");
                self.compensate(&order, &failure)
                    .instrument(tracing::info_span!(
                        "saga.compensate",
                        otel.name = "saga compensate PlaceOrder",
                        saga.compensation = true,
                        saga.reason = %failure,
                    ))
                    .await?;
                let cause = demo_platform::grpc::error_code(&failure.to_status());
                Err(demo_platform::grpc::final_error(
                    cause,
                    format!("order {} cancelled: {failure}", order.order_id),
                ))
            }
        }
    }

    /// Undoes step 2 and cancels the order. The release is tried at once; whether or not it
    /// succeeds, the OrderCancelled event (written with the cancellation) makes inventory
    /// release the reservation when it is delivered, so a reservation never leaks.
    async fn compensate(&self, order: &Order, failure: &CallError) -> Result<(), Status> {
        tracing::warn!(order.id = %order.order_id, reason = %failure, "compensating");
        let release = ReleaseRequest {
            order_id: order.order_id.clone(),
        };
        if let Err(error) = self
            .inventory
            .call("Inventory/Release", |channel| {
                let request = release.clone();
                async move { InventoryClient::new(channel).release(request).await }
            })
            .await
        {
            tracing::warn!(order.id = %order.order_id, "release deferred to the OrderCancelled event: {error}");
        }
        let cancelled = outbox::Event::new("OrderCancelled", event_of(order));
        self.set_status(&order.order_id, "CANCELLED", Some(cancelled))
            .await
    }

    async fn set_status(
        &self,
        order_id: &str,
        status: &'static str,
        event: Option<outbox::Event>,
    ) -> Result<(), Status> {
        let order_id = order_id.to_string();
        self.db
            .run("UPDATE", "orders", move |c| {
                let tx = c.transaction()?;
                tx.execute(
                    "UPDATE orders SET status = ?2 WHERE order_id = ?1",
                    [&order_id, status],
                )?;
                if let Some(event) = event {
                    event.append(&tx)?;
                }
                tx.commit()
            })
            .await?;
        Ok(())
    }
}

fn event_of(order: &Order) -> OrderEvent {
    OrderEvent {
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        sku: order.sku.clone(),
        quantity: order.quantity,
    }
}
