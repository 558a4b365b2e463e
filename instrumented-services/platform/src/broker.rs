//! NATS JetStream as the optional event transport between the outbox relay and its consumer
//! (`--nats-url`). Both sides share the stream's layout and how an [`Envelope`] becomes a
//! message: the event id is the `Nats-Msg-Id` (so JetStream also drops duplicates within its
//! window), the event type a header, and the producer's `traceparent`/`baggage` plain headers.

use std::collections::HashMap;

use async_nats::jetstream::{self, stream::Stream};
use async_nats::HeaderMap;
use demo_contracts::Envelope;

/// The JetStream stream holding order events.
pub const STREAM: &str = "ORDERS";
/// The durable pull consumer all inventory instances share (each event goes to one of them).
pub const CONSUMER: &str = "inventory";
/// The header naming the event type.
const EVENT_TYPE: &str = "Event-Type";
/// JetStream's de-duplication header.
const MESSAGE_ID: &str = "Nats-Msg-Id";

/// Why the broker cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot create the JetStream stream {STREAM}: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
}

/// Connects to NATS and returns the JetStream context with the order-event stream, created if
/// missing (subjects `<topic>.<event type>`, kept on disk).
pub async fn connect(url: &str, topic: &str) -> Result<(jetstream::Context, Stream), BrokerError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|source| BrokerError::Connect {
            url: url.to_string(),
            source,
        })?;
    let context = jetstream::new(client);
    let stream = context
        .get_or_create_stream(jetstream::stream::Config {
            name: STREAM.to_string(),
            subjects: vec![format!("{topic}.>")],
            ..Default::default()
        })
        .await?;
    Ok((context, stream))
}

/// The subject an event is published on.
pub fn subject(envelope: &Envelope) -> String {
    format!("{}.{}", envelope.topic, envelope.event_type)
}

/// The message headers carrying an event's id, type and trace context.
pub fn headers(envelope: &Envelope) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &envelope.headers {
        headers.insert(name.as_str(), value.as_str());
    }
    headers.insert(MESSAGE_ID, envelope.event_id.as_str());
    headers.insert(EVENT_TYPE, envelope.event_type.as_str());
    headers
}

/// The event a received message carries; `None` when it lacks the id or type headers.
pub fn envelope(message: &async_nats::Message) -> Option<Envelope> {
    let headers = message.headers.as_ref()?;
    let mut context = HashMap::new();
    for (name, values) in headers.iter() {
        let name = name.to_string();
        if name != MESSAGE_ID && name != EVENT_TYPE {
            if let Some(value) = values.first() {
                context.insert(name, value.as_str().to_string());
            }
        }
    }
    let subject = message.subject.as_str();
    Some(Envelope {
        event_id: headers.get(MESSAGE_ID)?.as_str().to_string(),
        event_type: headers.get(EVENT_TYPE)?.as_str().to_string(),
        topic: subject
            .split_once('.')
            .map_or(subject, |(topic, _)| topic)
            .to_string(),
        payload: message.payload.to_vec(),
        headers: context,
    })
}
