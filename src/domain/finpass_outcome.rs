//! How one Finpass call attempt ended, as a type: the metrics' label sets, the retry rule and
//! the error mapping all read it, so they cannot drift apart.

/// The `outcome` label of `finpass_requests_total` / `finpass_request_duration_seconds`; the
/// retryable ones are also the `reason` label of `finpass_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinpassOutcome {
    Success,
    /// 404 with the envelope's `message_code: client_not_found`: the only "unknown client".
    ClientNotFound,
    /// Any other 404: a wrong `FINPASS_BASE_URL`, or a proxy's page. Counted apart so that a
    /// misconfiguration does not hide among customers Finpass does not know.
    EndpointNotFound,
    Unauthorized,
    RateLimited,
    ServerError,
    ClientError,
    Timeout,
    TransportError,
    InvalidResponse,
    /// A successful answer whose `data.client_id` is not the client asked for (refused with
    /// `FINPASS_CLIENT_ID_MISMATCH=refuse`, the default).
    ClientMismatch,
}

impl FinpassOutcome {
    /// Every outcome, in the order metrics list them.
    pub const ALL: [Self; 11] = [
        Self::Success,
        Self::ClientNotFound,
        Self::EndpointNotFound,
        Self::Unauthorized,
        Self::RateLimited,
        Self::ServerError,
        Self::ClientError,
        Self::Timeout,
        Self::TransportError,
        Self::InvalidResponse,
        Self::ClientMismatch,
    ];

    /// The outcomes worth another attempt (connect errors, timeouts, 429, 5xx; never another
    /// 4xx): the one home of the retry rule, and the `reason` values of the retry metric.
    pub const RETRY_REASONS: [Self; 4] = [
        Self::RateLimited,
        Self::ServerError,
        Self::Timeout,
        Self::TransportError,
    ];

    /// [`Self::ALL`] as label values (for metric initialisation).
    pub const LABELS: [&'static str; Self::ALL.len()] = labels(Self::ALL);

    /// [`Self::RETRY_REASONS`] as label values.
    pub const RETRY_LABELS: [&'static str; Self::RETRY_REASONS.len()] = labels(Self::RETRY_REASONS);

    /// The bounded metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::ClientNotFound => "client_not_found",
            Self::EndpointNotFound => "endpoint_not_found",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::ClientError => "client_error",
            Self::Timeout => "timeout",
            Self::TransportError => "transport_error",
            Self::InvalidResponse => "invalid_response",
            Self::ClientMismatch => "client_mismatch",
        }
    }

    pub fn is_retryable(self) -> bool {
        Self::RETRY_REASONS.contains(&self)
    }
}

const fn labels<const N: usize>(outcomes: [FinpassOutcome; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = outcomes[i].as_str();
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn all_lists_every_outcome_once_with_distinct_labels() {
        // Adding a variant without listing it fails to compile here.
        let listed = |o: FinpassOutcome| match o {
            FinpassOutcome::Success
            | FinpassOutcome::ClientNotFound
            | FinpassOutcome::EndpointNotFound
            | FinpassOutcome::Unauthorized
            | FinpassOutcome::RateLimited
            | FinpassOutcome::ServerError
            | FinpassOutcome::ClientError
            | FinpassOutcome::Timeout
            | FinpassOutcome::TransportError
            | FinpassOutcome::InvalidResponse
            | FinpassOutcome::ClientMismatch => FinpassOutcome::ALL.contains(&o),
        };
        assert!(FinpassOutcome::ALL.iter().all(|o| listed(*o)));
        let labels: HashSet<_> = FinpassOutcome::LABELS.iter().collect();
        assert_eq!(labels.len(), FinpassOutcome::ALL.len());
        for (o, label) in FinpassOutcome::ALL.iter().zip(FinpassOutcome::LABELS) {
            assert_eq!(o.as_str(), label);
        }
    }

    #[test]
    fn retry_reasons_are_the_retryable_outcomes() {
        let retryable: Vec<_> = FinpassOutcome::ALL
            .into_iter()
            .filter(|o| o.is_retryable())
            .collect();
        assert_eq!(retryable, FinpassOutcome::RETRY_REASONS);
        assert_eq!(
            FinpassOutcome::RETRY_LABELS,
            ["rate_limited", "server_error", "timeout", "transport_error"]
        );
    }
}
