//! In-process EKS token signing: time per token. `make bench` runs it beside botocore's signer
//! (the peer) and reports the ratio.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use post_signup::outside::kubernetes::token::EksTokenSigner;

fn main() {
    let signer =
        EksTokenSigner::new("tgsearch-prod", "eu-west-1").expect("valid cluster and region");
    let creds = Credentials::new(
        "ASIAEXAMPLEEXAMPLE01",
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        Some("IQoJb3JpZ2luX2VjEXAMPLE+token/with=chars".to_owned()),
        None,
        "bench",
    );
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    for _ in 0..2_000 {
        black_box(signer.sign(&creds, at).unwrap());
    }
    // Five rounds; report the median per-token time.
    let n = 50_000;
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                black_box(
                    signer
                        .sign(black_box(&creds), at + Duration::from_secs(i % 60))
                        .unwrap(),
                );
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\": \"sign_token_in_process\", \"us_per_token\": {:.3}, \"rounds\": {:?}}}",
        rounds[2], rounds
    );
}
