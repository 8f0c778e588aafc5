//! Where job wake-ups are kept (#19): Amazon SQS when `JOBS_QUEUE_URL` is set (several
//! replicas share it), otherwise in process (one replica: the sandbox, the embedded default).

use url::Url;

use super::{
    ConfigError, is_loopback,
    reader::{Reader, invalid},
    vars,
};

#[derive(Debug, Clone, Default)]
pub struct JobQueueSettings {
    /// `None`: the in-process queue.
    pub sqs: Option<SqsSettings>,
}

/// An SQS queue, reached with the S3 connection's region and credentials chain.
#[derive(Debug, Clone)]
pub struct SqsSettings {
    pub queue_url: Url,
    /// An SQS-compatible server (moto in CI); unset on AWS.
    pub endpoint_url: Option<String>,
}

impl JobQueueSettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let Some(queue_url) = r.optional(&vars::JOBS_QUEUE_URL)? else {
            return Ok(Self::default());
        };
        let queue_url = Url::parse(&queue_url).map_err(|e| invalid(&vars::JOBS_QUEUE_URL, e))?;
        let plain_http_to_loopback = queue_url.scheme() == "http" && is_loopback(&queue_url);
        if !(queue_url.scheme() == "https" || plain_http_to_loopback)
            || queue_url.host_str().is_none()
        {
            return Err(invalid(
                &vars::JOBS_QUEUE_URL,
                "must be an https URL (https://sqs.{region}.amazonaws.com/{account}/{name}; plain http only to a loopback address)",
            ));
        }
        Ok(Self {
            sqs: Some(SqsSettings {
                queue_url,
                endpoint_url: r.optional(&vars::AWS_ENDPOINT_URL_SQS)?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<JobQueueSettings, ConfigError> {
        let lookup = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        JobQueueSettings::read(&Reader::new(&lookup))
    }

    #[test]
    fn unset_means_the_in_process_queue() {
        assert!(read(&[]).unwrap().sqs.is_none());
        assert!(read(&[("JOBS_QUEUE_URL", "")]).unwrap().sqs.is_none());
    }

    #[test]
    fn an_sqs_queue_url_with_an_optional_endpoint() {
        let s = read(&[(
            "JOBS_QUEUE_URL",
            "https://sqs.ap-south-1.amazonaws.com/123456789012/finpass-gateway-jobs",
        )])
        .unwrap()
        .sqs
        .unwrap();
        assert_eq!(s.queue_url.host_str(), Some("sqs.ap-south-1.amazonaws.com"));
        assert!(s.endpoint_url.is_none());
        let s = read(&[
            ("JOBS_QUEUE_URL", "http://127.0.0.1:5000/123456789012/q"),
            ("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:5000"),
        ])
        .unwrap()
        .sqs
        .unwrap();
        assert_eq!(s.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn plain_http_or_a_non_url_is_refused() {
        for bad in [
            "http://sqs.ap-south-1.amazonaws.com/1/q",
            "finpass-gateway-jobs",
            "ftp://127.0.0.1/1/q",
        ] {
            let err = read(&[("JOBS_QUEUE_URL", bad)]).unwrap_err().to_string();
            assert!(err.starts_with("JOBS_QUEUE_URL is invalid"), "{bad}: {err}");
        }
    }
}
