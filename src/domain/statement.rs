//! Statement ids ↔ object keys: the one place that knows how a stored statement's id relates
//! to its key.
//!
//! A statement lives at `{prefix}{client_id}/{statement_id}.pdf`. The write path decides how
//! the file name is built (today `{fip}-{hash}`, see [`ObjectKey::for_source`]); the read side
//! only relies on this folder layout. So the id is the file name without `.pdf`, it is stable
//! (keys are deterministic and never rewritten) and it needs no lookup table. Both directions
//! go through validated types, so no id can name a key outside its client's folder, and no key
//! outside that folder can be presented as a statement of the client.

use super::{ClientId, ObjectKey, Prefix, StatementId};

/// Every statement object's key ends with this.
pub const STATEMENT_SUFFIX: &str = ".pdf";

/// `{prefix}{client_id}/`: the folder holding all of a client's statements, and nothing else.
pub fn client_folder(prefix: &Prefix, client: &ClientId) -> String {
    format!("{}{}/", prefix.as_str(), client.as_str())
}

impl ObjectKey {
    /// The key of statement `id` of `client`. Both parts are validated ids
    /// (`[A-Za-z0-9_-]{1,128}`), so the key is always one file directly in the client's folder.
    pub fn for_statement(prefix: &Prefix, client: &ClientId, id: &StatementId) -> Self {
        Self::from_trusted(format!(
            "{}{}{STATEMENT_SUFFIX}",
            client_folder(prefix, client),
            id.as_str()
        ))
    }

    /// The statement id of this key if it is a statement of `client`: one file directly in the
    /// client's folder, named `{valid id}.pdf`. Anything else (a staging key, another client's
    /// key, a nested key, a stray object) is `None`.
    pub fn statement_id(&self, prefix: &Prefix, client: &ClientId) -> Option<StatementId> {
        statement_id_of(self.as_str(), prefix, client)
    }
}

/// [`ObjectKey::statement_id`] for a raw key as S3 lists it.
pub fn statement_id_of(key: &str, prefix: &Prefix, client: &ClientId) -> Option<StatementId> {
    let name = key
        .strip_prefix(client_folder(prefix, client).as_str())?
        .strip_suffix(STATEMENT_SUFFIX)?;
    StatementId::parse(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix() -> Prefix {
        Prefix::parse("statements/").expect("prefix")
    }

    fn client(id: &str) -> ClientId {
        ClientId::parse(id).expect("client")
    }

    #[test]
    fn ids_and_keys_round_trip() {
        let id = StatementId::parse("account_aggregator_v2_17-0123456789abcdef").expect("id");
        let key = ObjectKey::for_statement(&prefix(), &client("aa_1"), &id);
        assert_eq!(
            key.as_str(),
            "statements/aa_1/account_aggregator_v2_17-0123456789abcdef.pdf"
        );
        assert_eq!(key.statement_id(&prefix(), &client("aa_1")), Some(id));
    }

    #[test]
    fn keys_that_are_not_the_clients_statements_have_no_id() {
        let p = prefix();
        let c = client("aa_1");
        for key in [
            "statements/aa_2/x.pdf",
            "statements/aa_1/x.txt",
            "statements/aa_1/sub/x.pdf",
            "statements/aa_1/.pdf",
            "statements/aa_1/a.b.pdf",
            "_staging/finpass-gateway/x.pdf",
            "statements/aa_1x/y.pdf",
            "statements/aa_1/x.pdf.pdf",
        ] {
            assert_eq!(statement_id_of(key, &p, &c), None, "{key}");
        }
    }

    proptest::proptest! {
        /// Whatever the report link's path, the write path's key maps to a valid statement id
        /// and back to the same key: every stored report can carry a `statement_id`, and the
        /// read routes find it. (A change of the write path's naming that broke this fails
        /// here.)
        #[test]
        fn every_report_key_has_a_statement_id(raw_id in "[A-Za-z0-9_-]{1,128}", fip in ".*", host in ".*", path in ".*", etag in ".*") {
            let p = prefix();
            let c = client(&raw_id);
            let source = super::super::SourceLocation { host, path };
            let version = super::super::SourceVersion::from_headers(Some(&etag), None, None)
                .unwrap_or_else(|| super::super::SourceVersion::from_sha256("0"));
            let key = ObjectKey::for_source(&p, &c, &fip, &source, &version);
            let id = key.statement_id(&p, &c);
            proptest::prop_assert!(id.is_some(), "{key} has no statement id");
            let id = id.unwrap_or_else(|| unreachable!());
            proptest::prop_assert!(id.as_str().len() <= crate::domain::ids::MAX_ID_LEN);
            proptest::prop_assert_eq!(ObjectKey::for_statement(&p, &c, &id), key);
        }

        /// No (client, id) pair that passes validation yields a key outside the client's folder.
        #[test]
        fn statement_keys_stay_in_the_client_folder(raw_client in ".*", raw_id in ".*") {
            let (Ok(c), Ok(id)) = (ClientId::parse(raw_client), StatementId::parse(raw_id)) else {
                return Ok(());
            };
            let key = ObjectKey::for_statement(&prefix(), &c, &id);
            let rest = key.as_str().strip_prefix(client_folder(&prefix(), &c).as_str());
            proptest::prop_assert!(rest.is_some_and(|r| !r.contains('/') && !r.contains("..")));
        }
    }
}
