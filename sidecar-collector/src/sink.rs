//! Where received spans go: the store (all-in-one, central) or the upstream
//! collector (sidecar). The receivers answer once the sink has taken them.

use crate::forward::Forwarder;
use crate::ingest::{records_from_request, retain_valid, span_count, Redaction, TimeWindow};
use crate::pipeline::{Pipeline, SubmitError};
use crate::telemetry::Counters;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use std::sync::Arc;

#[derive(Clone)]
pub struct Sink {
    pub target: Target,
    /// Credentials in attributes, replaced before anything is kept or forwarded.
    pub redaction: Arc<Redaction>,
}

#[derive(Clone)]
pub enum Target {
    /// Store, then answer (nothing acknowledged is lost).
    Store {
        pipeline: Pipeline,
        indexed_tags: Arc<Vec<String>>,
        /// Span start times that are stored.
        window: TimeWindow,
        /// Adaptive sampling counts what arrives.
        adaptive: Option<Arc<crate::sampling::adaptive::Adaptive>>,
    },
    /// Queue for forwarding, then answer at once.
    Forward(Forwarder),
}

/// Invalid spans that were left out.
#[derive(Debug, Default)]
pub struct Accepted {
    pub rejected: u64,
    pub message: String,
}

impl Sink {
    pub fn counters(&self) -> &Arc<Counters> {
        match &self.target {
            Target::Store { pipeline, .. } => &pipeline.counters,
            Target::Forward(f) => &f.counters,
        }
    }

    /// Takes a request; `Err` means "retry later". Every mode counts what it
    /// received and rejected here, once per request.
    pub async fn accept(
        &self,
        mut req: ExportTraceServiceRequest,
    ) -> Result<Accepted, SubmitError> {
        let c = self.counters();
        c.spans_received.inc_by(span_count(&req));
        c.attributes_redacted.inc_by(self.redaction.apply(&mut req));
        match &self.target {
            Target::Store {
                pipeline,
                indexed_tags,
                window,
                adaptive,
            } => {
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                let ingested = records_from_request(req, indexed_tags, Some((*window, now_us)));
                c.spans_rejected.inc_by(ingested.rejected);
                let tally = adaptive.as_ref().map(|a| {
                    a.tally(ingested.records.iter().filter_map(|r| {
                        Some((
                            r.service.as_str(),
                            r.operation.as_str(),
                            r.sampled_probability?,
                        ))
                    }))
                });
                if !ingested.records.is_empty() {
                    pipeline.submit(ingested.records).await?;
                }
                // Counted once stored: a refused request comes back.
                if let (Some(a), Some(t)) = (adaptive, tally) {
                    a.observe(t);
                }
                Ok(Accepted {
                    rejected: ingested.rejected,
                    message: ingested.message,
                })
            }
            Target::Forward(f) => {
                let (rejected, message) = retain_valid(&mut req);
                let n = span_count(&req);
                c.spans_rejected.inc_by(rejected);
                if n > 0 {
                    f.enqueue(req)?;
                }
                Ok(Accepted { rejected, message })
            }
        }
    }
}
