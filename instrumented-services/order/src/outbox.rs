//! The transactional outbox: events are written in the same SQLite transaction as the state
//! change they announce, then a relay delivers them — to inventory's event sink over gRPC, or
//! to a NATS JetStream stream with `--nats-url` — oldest first, at least once (an event is
//! marked delivered only after the sink's answer or JetStream's publish ack, so one whose
//! acknowledgement is lost is sent again; the consumer deduplicates by event id).
//!
//! Tracing: creating an event is a PRODUCER span in the request's trace; its context travels in
//! the event's headers, and the consumer's span links to it. Each relay round that has work is
//! its own trace, with a `send` span per event around its delivery attempts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use demo_contracts::event_sink_client::EventSinkClient;
use demo_contracts::{Envelope, OrderEvent};
use demo_platform::db::Database;
use demo_platform::resilience::Downstream;
use demo_platform::{broker, propagation};
use prost::Message as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Where order events go.
const TOPIC: &str = "orders";
/// Events delivered per relay round at most.
const BATCH: usize = 50;

/// An event about to be written to the outbox.
pub struct Event {
    envelope: Envelope,
}

impl Event {
    /// Records the PRODUCER span of the event in the current trace and captures its context.
    pub fn new(event_type: &'static str, payload: OrderEvent) -> Self {
        let event_id = format!("EVT-{:016x}", fastrand::u64(..));
        let span = tracing::info_span!(
            "produce",
            otel.name = format!("{TOPIC} create"),
            otel.kind = "producer",
            messaging.system = "outbox",
            messaging.operation.type = "create",
            messaging.destination.name = TOPIC,
            messaging.message.id = %event_id,
            messaging.message.type = event_type,
            order.id = %payload.order_id,
        );
        let headers = propagation::inject_map(&span.context());
        Self {
            envelope: Envelope {
                event_id,
                event_type: event_type.to_string(),
                topic: TOPIC.to_string(),
                payload: payload.encode_to_vec(),
                headers,
            },
        }
    }

    /// Appends the event inside the caller's transaction.
    pub fn append(self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let headers = serde_json::to_string(&self.envelope.headers).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO outbox (event_id, event_type, topic, payload, headers) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                self.envelope.event_id,
                self.envelope.event_type,
                self.envelope.topic,
                self.envelope.payload,
                headers
            ],
        )?;
        Ok(())
    }
}

fn pending(c: &mut rusqlite::Connection) -> rusqlite::Result<Vec<(i64, Envelope)>> {
    let mut statement = c.prepare_cached(
        "SELECT seq, event_id, event_type, topic, payload, headers FROM outbox
         WHERE delivered_at_unix_ms IS NULL ORDER BY seq LIMIT ?1",
    )?;
    let rows = statement.query_map([BATCH as i64], |row| {
        let headers: String = row.get(5)?;
        Ok((
            row.get(0)?,
            Envelope {
                event_id: row.get(1)?,
                event_type: row.get(2)?,
                topic: row.get(3)?,
                payload: row.get(4)?,
                headers: serde_json::from_str::<HashMap<String, String>>(&headers).unwrap_or_default(),
            },
        ))
    })?;
    rows.collect()
}

/// Where the relay hands events over.
pub enum Transport {
    /// Inventory's `EventSink/Deliver`, through discovery with retries.
    Grpc(Arc<Downstream>),
    /// A JetStream stream that inventory consumes.
    Nats(Box<async_nats::jetstream::Context>),
}

impl Transport {
    /// Connects to NATS and creates the stream if it is missing.
    pub async fn nats(url: &str) -> Result<Self, broker::BrokerError> {
        let (context, _) = broker::connect(url, TOPIC).await?;
        Ok(Self::Nats(Box::new(context)))
    }

    /// `messaging.system` of the spans around a delivery.
    fn system(&self) -> &'static str {
        match self {
            Self::Grpc(_) => "outbox",
            Self::Nats(_) => "nats",
        }
    }

    /// Hands one event over; `Ok` only once the receiver has acknowledged it.
    async fn send(&self, envelope: &Envelope) -> Result<(), String> {
        match self {
            Self::Grpc(inventory) => inventory
                .call("EventSink/Deliver", |channel| {
                    let request = envelope.clone();
                    async move { EventSinkClient::new(channel).deliver(request).await }
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Nats(jetstream) => {
                let ack = jetstream
                    .publish_with_headers(
                        broker::subject(envelope),
                        broker::headers(envelope),
                        envelope.payload.clone().into(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map(drop).map_err(|e| e.to_string())
            }
        }
    }
}

/// Delivers pending events every `interval`, forever.
pub async fn relay(db: Database, transport: Transport, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        // Polled without a span: an idle relay would otherwise fill the span store.
        let events = match db.run_untraced(pending).await {
            Ok(events) if events.is_empty() => continue,
            Ok(events) => events,
            Err(error) => {
                tracing::error!("outbox: cannot read pending events: {error}");
                continue;
            }
        };
        let span = tracing::info_span!(
            parent: None,
            "outbox.relay",
            otel.name = "outbox relay",
            messaging.system = transport.system(),
            messaging.operation.type = "send",
            messaging.batch.message_count = events.len() as i64,
        );
        deliver(&db, &transport, events).instrument(span).await;
    }
}

async fn deliver(db: &Database, transport: &Transport, events: Vec<(i64, Envelope)>) {
    for (seq, envelope) in events {
        let send = tracing::info_span!(
            "send",
            otel.name = format!("{} send", envelope.topic),
            otel.kind = "producer",
            messaging.system = transport.system(),
            messaging.operation.type = "send",
            messaging.destination.name = %envelope.topic,
            messaging.message.id = %envelope.event_id,
            messaging.message.type = %envelope.event_type,
            otel.status_code = tracing::field::Empty,
        );
        let delivered = transport.send(&envelope).instrument(send.clone()).await;
        if delivered.is_err() {
            send.record("otel.status_code", "error");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let ok = delivered.is_ok();
        let marked = db
            .run("UPDATE", "outbox", move |c| {
                if ok {
                    c.execute(
                        "UPDATE outbox SET delivered_at_unix_ms = ?2, attempts = attempts + 1 WHERE seq = ?1",
                        [seq, now],
                    )
                } else {
                    c.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?1", [seq])
                }
            })
            .await;
        if let Err(error) = marked {
            tracing::error!("outbox: cannot mark event {}: {error}", envelope.event_id);
        }
        if let Err(error) = delivered {
            // Keep the order of events: stop here and try again next round.
            tracing::warn!(messaging.message.id = %envelope.event_id, "delivery failed, will retry: {error}");
            return;
        }
    }
}
