//! Password guessing, throttled per account in the database (HTTP APIs cannot use AWS WAF, and
//! a stage-wide limit would let one client lock everyone out). After `FREE_FAILURES`
//! consecutive failures for one account from one address, that pair is refused (429) for a
//! window that starts at a minute and doubles with each further failure, up to an hour. Once an
//! account took `MAX_FAILURES_PER_HOUR` failures from anywhere, every address that failed
//! against it in the last hour is refused until the oldest failure leaves the hour, and an
//! address that has not failed gets one failed try until then; an address that failed against
//! `MAX_SOURCE_ACCOUNTS_PER_HOUR` different accounts in the hour is refused (password spraying:
//! a few guesses at many accounts; people behind one address who mistype their own passwords
//! rarely reach it). An IPv6 source counts as its /64 (one host's usual allocation), so
//! rotating addresses within it buys nothing. A success clears the pair. The right password
//! from an address that has not failed always gets through, so nobody can lock an
//! administrator out from elsewhere. Password recovery sends at most one email per address per
//! window.

use std::time::Duration;

use crate::db::DbPool;
use crate::error::{ApiError, ApiResult};

pub const FREE_FAILURES: i32 = 5;
pub const MAX_FAILURES_PER_HOUR: i64 = 100;
pub const MAX_SOURCE_ACCOUNTS_PER_HOUR: i64 = 20;
pub const RECOVERY_EMAIL_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The source a throttle counts for: an IPv4 address as it is, an IPv6 one as its /64.
pub fn source_key(source_ip: &str) -> String {
    match source_ip.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
        },
        Ok(ip) => ip.to_string(),
        Err(_) => source_ip.to_owned(),
    }
}

/// The account a throttle counts for: the email as typed, trimmed and folded; or a fixed name
/// for attempts that name no account (reset tokens).
pub fn account_key(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// 429 with `Retry-After` when the pair, the account (for an address that failed against it)
/// or the address is throttled now.
pub async fn check(pool: &DbPool, account: &str, source_ip: &str) -> ApiResult<()> {
    let client = pool.get().await?;
    // Each wait is until the oldest failure that counts leaves the hour.
    let row = client
        .query_one(
            "SELECT
                (SELECT ceil(extract(epoch FROM blocked_until - now()))::int8 FROM login_throttle
                 WHERE account = $1 AND source_ip = $2 AND blocked_until > now()),
                (SELECT CASE WHEN count(*) >= $3 AND EXISTS (
                            SELECT 1 FROM login_throttle WHERE account = $1 AND source_ip = $2
                              AND last_failure > now() - interval '1 hour')
                        THEN ceil(extract(epoch FROM min(failed_at) + interval '1 hour' - now()))::int8 END
                 FROM login_failures WHERE account = $1 AND failed_at > now() - interval '1 hour'),
                (SELECT CASE WHEN count(DISTINCT account) >= $4
                        THEN ceil(extract(epoch FROM min(failed_at) + interval '1 hour' - now()))::int8 END
                 FROM login_failures WHERE source_ip = $2 AND failed_at > now() - interval '1 hour')",
            &[
                &account,
                &source_key(source_ip),
                &MAX_FAILURES_PER_HOUR,
                &MAX_SOURCE_ACCOUNTS_PER_HOUR,
            ],
        )
        .await?;
    let wait = (0..3).filter_map(|i| row.get::<_, Option<i64>>(i)).max();
    match wait {
        Some(seconds) => Err(ApiError::TooManyRequests {
            detail: "Too many failed attempts; try again later".into(),
            retry_after: Duration::from_secs(seconds.max(1) as u64),
        }),
        None => Ok(()),
    }
}

/// Counts a failed attempt of the pair, of the account and of the address.
pub async fn failed(pool: &DbPool, account: &str, source_ip: &str) -> ApiResult<()> {
    let client = pool.get().await?;
    client
        .execute(
            "WITH pair AS (
                INSERT INTO login_throttle (account, source_ip, failures) VALUES ($1, $2, 1)
                ON CONFLICT (account, source_ip) DO UPDATE SET
                    failures = login_throttle.failures + 1,
                    last_failure = now(),
                    blocked_until = CASE WHEN login_throttle.failures + 1 >= $3
                        THEN now() + least(interval '1 minute' * power(2, login_throttle.failures + 1 - $3),
                                           interval '1 hour')
                    END
                RETURNING failures
             ), counted AS (
                INSERT INTO login_failures (account, source_ip) VALUES ($1, $2)
             ), pruned AS (
                DELETE FROM login_failures WHERE (account = $1 OR source_ip = $2)
                  AND failed_at < now() - interval '1 hour'
             )
             SELECT failures FROM pair",
            &[&account, &source_key(source_ip), &FREE_FAILURES],
        )
        .await?;
    Ok(())
}

/// A code attempt (a second factor), counted before the code is checked: each of many
/// parallel guesses takes its own number from one atomic increment of the pair, and those past
/// the free ones are refused (429) without being checked. A right code then clears the pair
/// (`succeeded`); a wrong one adds to the hourly caps (`code_failed`).
pub async fn claim_code_attempt(pool: &DbPool, account: &str, source_ip: &str) -> ApiResult<()> {
    check(pool, account, source_ip).await?;
    let client = pool.get().await?;
    let row = client
        .query_one(
            "INSERT INTO login_throttle (account, source_ip, failures) VALUES ($1, $2, 1)
             ON CONFLICT (account, source_ip) DO UPDATE SET
                failures = login_throttle.failures + 1,
                last_failure = now(),
                blocked_until = CASE WHEN login_throttle.failures + 1 >= $3
                    THEN now() + least(interval '1 minute' * power(2, login_throttle.failures + 1 - $3),
                                       interval '1 hour')
                END
             RETURNING failures, ceil(extract(epoch FROM blocked_until - now()))::int8",
            &[&account, &source_key(source_ip), &FREE_FAILURES],
        )
        .await?;
    let (attempt, wait): (i32, Option<i64>) = (row.get(0), row.get(1));
    if attempt > FREE_FAILURES {
        return Err(ApiError::TooManyRequests {
            detail: "Too many failed attempts; try again later".into(),
            retry_after: Duration::from_secs(wait.unwrap_or(60).max(1) as u64),
        });
    }
    Ok(())
}

/// A claimed code attempt that failed: counted for the hourly caps of the account and the
/// address (the pair counted it when claimed).
pub async fn code_failed(pool: &DbPool, account: &str, source_ip: &str) -> ApiResult<()> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO login_failures (account, source_ip) VALUES ($1, $2)",
            &[&account, &source_key(source_ip)],
        )
        .await?;
    Ok(())
}

/// A success: the pair starts over.
pub async fn succeeded(pool: &DbPool, account: &str, source_ip: &str) -> ApiResult<()> {
    pool.get()
        .await?
        .execute(
            "DELETE FROM login_throttle WHERE account = $1 AND source_ip = $2",
            &[&account, &source_key(source_ip)],
        )
        .await?;
    Ok(())
}

/// May a recovery email go to this account now? Claims the window when it may.
pub async fn claim_recovery_email(pool: &DbPool, account: &str) -> ApiResult<bool> {
    let window = RECOVERY_EMAIL_WINDOW.as_secs_f64();
    Ok(pool
        .get()
        .await?
        .query_opt(
            "INSERT INTO recovery_emails (account, sent_at) VALUES ($1, now())
             ON CONFLICT (account) DO UPDATE SET sent_at = now()
             WHERE recovery_emails.sent_at < now() - make_interval(secs => $2)
             RETURNING 1",
            &[&account, &window],
        )
        .await?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::source_key;

    #[test]
    fn an_ipv6_source_counts_as_its_64() {
        assert_eq!(
            source_key("2001:db8:1:2:aaaa::1"),
            source_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(source_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_ne!(source_key("2001:db8:1:3::1"), source_key("2001:db8:1:2::1"));
        assert_eq!(source_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(source_key(""), "");
    }
}
