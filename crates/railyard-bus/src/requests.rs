//! Request/reply on plain NATS subjects, for the doors Railyard serves over core NATS
//! (intake's `railyard.intake.cdevents`): [`Bus::serve`] subscribes in a queue group and hands
//! out [`Request`]s that answer themselves; [`Bus::request`] asks one. The raw client stays
//! inside the bus.

use std::time::Duration;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt as _;

use crate::bus::Bus;
use crate::error::BusError;

/// Requests arriving on one subject for one queue group.
#[derive(Debug)]
pub struct Requests {
    subject: String,
    subscriber: async_nats::Subscriber,
    client: async_nats::Client,
}

/// One request: its headers and payload, and where the answer goes.
#[derive(Debug)]
pub struct Request {
    /// The NATS headers it came with.
    pub headers: Option<HeaderMap>,
    /// Its body.
    pub payload: Bytes,
    reply: Option<Subject>,
    client: async_nats::Client,
}

impl Requests {
    /// The next request; `None` once the subscription has ended (the connection closed or
    /// [`Requests::stop`] was called).
    pub async fn next(&mut self) -> Option<Request> {
        let message = self.subscriber.next().await?;
        Some(Request {
            headers: message.headers,
            payload: message.payload,
            reply: message.reply,
            client: self.client.clone(),
        })
    }

    /// Stops taking requests; those already handed out can still answer.
    pub async fn stop(mut self) {
        if let Err(error) = self.subscriber.unsubscribe().await {
            tracing::debug!(subject = self.subject, %error, "unsubscribing failed");
        }
    }
}

impl Request {
    /// Answers it (nothing happens when the sender asked for no answer).
    pub async fn respond(self, payload: Bytes) -> Result<(), BusError> {
        let Some(reply) = self.reply else {
            return Ok(());
        };
        self.client
            .publish(reply, payload)
            .await
            .map_err(|error| BusError::nats("answering a request", Duration::ZERO, error))
    }
}

impl Bus {
    /// Serves requests on the plain subject `subject` (not `railyard.events.`, no wildcards)
    /// in the queue group `group`, so several processes share them.
    pub async fn serve(&self, subject: &str, group: &str) -> Result<Requests, BusError> {
        self.check_plain_subject(subject)?;
        let client = self.raw_client().clone();
        let subscriber = client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await
            .map_err(|error| self.nats_error(format!("subscribing to {subject}"), error))?;
        Ok(Requests {
            subject: subject.to_owned(),
            subscriber,
            client,
        })
    }

    /// Sends `payload` with `headers` to the plain subject `subject` and waits (the bus's
    /// timeout) for one answer.
    pub async fn request(
        &self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: Bytes,
    ) -> Result<Bytes, BusError> {
        self.check_plain_subject(subject)?;
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        let operation = || format!("asking {subject}");
        let answer = tokio::time::timeout(
            self.timeout(),
            self.raw_client()
                .request_with_headers(subject.to_owned(), map, payload),
        )
        .await
        .map_err(|elapsed| self.nats_error(operation(), elapsed))?
        .map_err(|error| self.nats_error(operation(), error))?;
        Ok(answer.payload)
    }

    /// What the server it is connected to said about itself (TLS required, version, peers'
    /// client URLs).
    pub fn server_info(&self) -> async_nats::ServerInfo {
        self.raw_client().server_info()
    }
}
