//! Where a bucket is: the data-residency check at start (`REQUIRED_BUCKET_REGION`).

use aws_sdk_s3::types::BucketLocationConstraint;

use super::{Storage, StorageError};
impl Storage {
    /// The region S3 says `bucket` is in (GetBucketLocation). S3 answers an empty
    /// LocationConstraint for us-east-1 and the legacy `EU` for eu-west-1.
    pub async fn bucket_region(&self, bucket: &str) -> Result<String, StorageError> {
        self.metrics
            .s3_request(crate::metrics::S3Op::GetBucketLocation);
        let out = self
            .client
            .get_bucket_location()
            .bucket(bucket)
            .send()
            .await
            .map_err(StorageError::s3("GetBucketLocation"))?;
        Ok(region_of(out.location_constraint()))
    }
}

fn region_of(constraint: Option<&BucketLocationConstraint>) -> String {
    match constraint.map(BucketLocationConstraint::as_str) {
        None | Some("") => "us-east-1".to_owned(),
        Some("EU") => "eu-west-1".to_owned(),
        Some(region) => region.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_constraint_is_us_east_1_and_eu_is_eu_west_1() {
        assert_eq!(region_of(None), "us-east-1");
        assert_eq!(
            region_of(Some(&BucketLocationConstraint::from(""))),
            "us-east-1"
        );
        assert_eq!(
            region_of(Some(&BucketLocationConstraint::from("EU"))),
            "eu-west-1"
        );
        assert_eq!(
            region_of(Some(&BucketLocationConstraint::ApSouth1)),
            "ap-south-1"
        );
    }
}
