//! finpass-gateway: stores customers' Finpass Account Aggregator statements in the company's
//! S3 bucket and returns permanent object keys. See README.md for the tour.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod domain;
pub mod download;
pub mod finpass;
pub mod jobs;
pub mod lifecycle;
pub mod link_policy;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod retention;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod startup;
pub mod storage;
pub mod telemetry;

#[cfg(test)]
mod readme_tests {
    /// The README's layout table names only paths that exist.
    #[test]
    fn layout_table_names_only_existing_paths() {
        let readme = include_str!("../README.md");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| path | concern |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert!(rows.len() > 10, "layout table not found");
        for row in rows {
            let first_cell = row.split('|').nth(1).unwrap_or_default();
            for path in first_cell.split('`').skip(1).step_by(2) {
                assert!(
                    root.join(path).exists(),
                    "README layout names {path}, which does not exist"
                );
            }
        }
    }
}
