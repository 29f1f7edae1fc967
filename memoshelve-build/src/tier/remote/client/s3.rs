//! The S3 backend (`s3://bucket/prefix`, feature `remote-s3`): S3's REST API (`GetObject`,
//! `HeadObject`, `PutObject`, `ListObjectsV2`, `HeadBucket`) signed with AWS Signature V4, over
//! the same ureq client as the HTTP backend (no async runtime, no SDK: see the README's FAQ for
//! the compile-time figures). Objects are `<prefix>/ac/<hex key>` and `<prefix>/cas/<blake3 hex>`;
//! bodies are streamed (`UNSIGNED-PAYLOAD`: every blob is checked by blake3 on read anyway).
//!
//! Credentials and endpoint come from the usual variables: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION` (default
//! `us-east-1`), and `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for other S3-compatible servers
//! (then addressed path-style: `<endpoint>/<bucket>/<key>`).

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Source;
use super::sign::{hex, hmac_sha256, sha256_hex};
use crate::tier::remote::env_value;

const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

pub(super) struct S3 {
    agent: ureq::Agent,
    /// `scheme://host[:port]`.
    endpoint: String,
    /// The `Host` header: the endpoint's authority.
    host: String,
    /// `<endpoint>/<bucket>/<key>` rather than `<bucket>.<endpoint>/<key>`.
    path_style: bool,
    bucket: String,
    /// Without leading or trailing `/`; may be empty.
    prefix: String,
    region: String,
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
}

impl S3 {
    pub(super) fn open(url: &str) -> Result<S3, String> {
        let fail =
            |message: &str| format!("remote {}: {message}", crate::tier::remote::redact(url));
        let rest = url.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(fail("no bucket: write s3://bucket/prefix"));
        }
        let access_key = env_value("AWS_ACCESS_KEY_ID")
            .ok_or_else(|| fail("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"))?;
        let secret_key = env_value("AWS_SECRET_ACCESS_KEY")
            .ok_or_else(|| fail("AWS_SECRET_ACCESS_KEY is not set"))?;
        let region = env_value("AWS_REGION")
            .or_else(|| env_value("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let (endpoint, path_style) =
            match env_value("AWS_ENDPOINT_URL_S3").or_else(|| env_value("AWS_ENDPOINT_URL")) {
                Some(endpoint) => (endpoint.trim_end_matches('/').to_owned(), true),
                None => (format!("https://{bucket}.s3.{region}.amazonaws.com"), false),
            };
        let host = endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
            .filter(|host| !host.is_empty())
            .ok_or_else(|| fail("AWS_ENDPOINT_URL is not a URL like http://host:port"))?;
        Ok(S3 {
            agent: super::agent(),
            endpoint,
            host,
            path_style,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            region,
            access_key,
            secret_key,
            session_token: env_value("AWS_SESSION_TOKEN"),
        })
    }

    fn object_key(&self, path: &str) -> String {
        if self.prefix.is_empty() { path.to_owned() } else { format!("{}/{path}", self.prefix) }
    }

    /// A signed request for an object (`Some(key)`) or the bucket itself (`None`).
    fn signed(
        &self,
        method: &str,
        object: Option<&str>,
        query: &[(&str, &str)],
    ) -> ureq::http::request::Builder {
        let mut uri_path =
            if self.path_style { format!("/{}", self.bucket) } else { String::new() };
        if let Some(object) = object {
            uri_path.push('/');
            uri_path.push_str(&encode(object, false));
        }
        if uri_path.is_empty() {
            uri_path.push('/');
        }
        let mut pairs: Vec<(String, String)> =
            query.iter().map(|(name, value)| (encode(name, true), encode(value, true))).collect();
        pairs.sort();
        let query: Vec<String> =
            pairs.iter().map(|(name, value)| format!("{name}={value}")).collect();
        let query = query.join("&");
        let (date, time) = utc_now();
        let amz_date = format!("{date}T{time}Z");
        let mut headers: Vec<(&str, String)> = vec![
            ("host", self.host.clone()),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD.to_owned()),
            ("x-amz-date", amz_date.clone()),
        ];
        if let Some(token) = &self.session_token {
            headers.push(("x-amz-security-token", token.clone()));
        }
        let canonical_headers: String =
            headers.iter().map(|(name, value)| format!("{name}:{}\n", value.trim())).collect();
        let signed_headers: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        let signed_headers = signed_headers.join(";");
        let canonical_request = format!(
            "{method}\n{uri_path}\n{query}\n{canonical_headers}\n{signed_headers}\n{UNSIGNED_PAYLOAD}"
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let secret = format!("AWS4{}", self.secret_key);
        let key = hmac_sha256(secret.as_bytes(), &[date.as_bytes()]);
        let key = hmac_sha256(&key, &[self.region.as_bytes()]);
        let key = hmac_sha256(&key, &[b"s3"]);
        let key = hmac_sha256(&key, &[b"aws4_request"]);
        let signature = hex(&hmac_sha256(&key, &[string_to_sign.as_bytes()]));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );
        let url = if query.is_empty() {
            format!("{}{uri_path}", self.endpoint)
        } else {
            format!("{}{uri_path}?{query}", self.endpoint)
        };
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.header("authorization", authorization)
    }

    fn run(
        &self,
        request: ureq::http::request::Builder,
        body: impl ureq::AsSendBody,
    ) -> io::Result<ureq::http::Response<ureq::Body>> {
        super::send(&self.agent, request, body)
    }

    /// An error naming what S3 said (its `<Code>`), never the credentials.
    fn failed(
        &self,
        method: &str,
        path: &str,
        response: ureq::http::Response<ureq::Body>,
    ) -> io::Error {
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap_or_default();
        let code = between(&text, "<Code>", "</Code>").unwrap_or_default();
        let base = super::status_error(method, path, status);
        if code.is_empty() { base } else { io::Error::other(format!("{base}: {code}")) }
    }
}

impl super::Backend for S3 {
    fn get(&self, path: &str, sink: &mut dyn Write) -> io::Result<bool> {
        let response = self.run(self.signed("GET", Some(&self.object_key(path)), &[]), ())?;
        match response.status().as_u16() {
            200 => {
                io::copy(&mut response.into_body().into_reader(), sink)?;
                Ok(true)
            }
            404 => Ok(false),
            _ => Err(self.failed("GET", path, response)),
        }
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let response = self.run(self.signed("HEAD", Some(&self.object_key(path)), &[]), ())?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(super::status_error("HEAD", path, status)),
        }
    }

    fn put(&self, path: &str, source: Source<'_>) -> io::Result<()> {
        let request = self.signed("PUT", Some(&self.object_key(path)), &[]);
        let response = match source {
            Source::Bytes(bytes) => self.run(request, bytes)?,
            Source::File(file) => self.run(request, std::fs::File::open(file)?)?,
        };
        match response.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failed("PUT", path, response)),
        }
    }

    fn entry_keys(&self) -> io::Result<Vec<String>> {
        let prefix = self.object_key("ac/");
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix.as_str())];
            if let Some(token) = &token {
                query.push(("continuation-token", token.as_str()));
            }
            let response = self.run(self.signed("GET", None, &query), ())?;
            if response.status().as_u16() != 200 {
                return Err(self.failed("GET", "?list-type=2", response));
            }
            let text = response.into_body().read_to_string().map_err(super::ureq_error)?;
            names.extend(super::entry_names_in(&text));
            token = between(&text, "<NextContinuationToken>", "</NextContinuationToken>")
                .filter(|_| text.contains("<IsTruncated>true</IsTruncated>"))
                .map(str::to_owned);
            if token.is_none() {
                return Ok(names);
            }
        }
    }

    fn ping(&self) -> io::Result<()> {
        let response = self.run(self.signed("HEAD", None, &[]), ())?;
        match response.status().as_u16() {
            200 => Ok(()),
            404 => Err(io::Error::other(format!("bucket {:?} does not exist", self.bucket))),
            status => Err(super::status_error("HEAD", "", status)),
        }
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// SigV4's URI encoding: unreserved characters as they are, `/` too unless `slash`, the rest
/// as `%XX`.
fn encode(text: &str, slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(byte as char);
            }
            b'/' if !slash => encoded.push('/'),
            _ => {
                use std::fmt::Write as _;
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
    }
    encoded
}

/// Today's date (`YYYYMMDD`) and time (`HHMMSS`), UTC.
fn utc_now() -> (String, String) {
    utc(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs()))
}

/// The date and time of a Unix time, UTC.
fn utc(seconds: u64) -> (String, String) {
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}{month:02}{day:02}"),
        format!("{:02}{:02}{:02}", rest / 3600, rest % 3600 / 60, rest % 60),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil_and_names_encoded() {
        let utc = |seconds| {
            let (date, time) = super::utc(seconds);
            format!("{date}T{time}")
        };
        assert_eq!(utc(0), "19700101T000000");
        assert_eq!(utc(1_700_000_000), "20231114T221320");
        assert_eq!(utc(951_782_400), "20000229T000000");
        assert_eq!(super::encode("a b/c~", false), "a%20b/c~");
        assert_eq!(super::encode("a/b", true), "a%2Fb");
    }
}
