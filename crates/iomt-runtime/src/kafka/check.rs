//! The connectivity probe behind `iomt check --config`: can the brokers be reached with these
//! settings, and do the topics the configuration names exist?
//!
//! # What must hold
//! * Nothing is produced, no group is joined and no offset is committed: the probe only asks
//!   for metadata, so running it next to a live service changes nothing.
//! * A missing topic is a finding, not an error of the probe: consumers do not create topics
//!   (`allow.auto.create.topics` stays off), so a typo would otherwise wait silently.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::config::{KafkaConnection, client_config};

/// What the brokers said about the configured topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicsFound {
    /// How many brokers the cluster metadata lists.
    pub brokers: usize,
    /// Each configured topic and its partition count (`None`: the cluster does not have it).
    pub topics: Vec<(String, Option<usize>)>,
}

/// Asks the brokers for the cluster's metadata, within `timeout`, and looks up `topics`.
///
/// # Errors
/// A sentence saying why the brokers could not be used (settings, secrets, network, auth),
/// never containing a secret.
pub async fn check_topics(
    connection: &KafkaConnection,
    topics: &[String],
    timeout: Duration,
) -> Result<TopicsFound, String> {
    let config = client_config(connection).map_err(|e| e.to_string())?;
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| format!("kafka client: {e}; check the settings under extra"))?;
    let wanted = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(None, timeout).map_err(|e| {
            format!(
                "cannot reach the brokers: {e}; check bootstrap_servers, security and any \
                 firewall in between"
            )
        })?;
        let topics = wanted
            .into_iter()
            .map(|name| {
                let partitions = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .map(|t| t.partitions().len());
                (name, partitions)
            })
            .collect();
        Ok(TopicsFound {
            brokers: metadata.brokers().len(),
            topics,
        })
    })
    .await
    .map_err(|e| format!("the kafka probe failed: {e}"))?
}
