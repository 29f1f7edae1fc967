//! The HTTP backend (`http(s)://host/path`, feature `remote-http`): plain `GET`, `HEAD` and `PUT`
//! of `<url>/ac/<hex key>` and `<url>/cas/<blake3 hex>`, the bazel-remote / WebDAV layout (nginx
//! with `dav_methods PUT`, bazel-remote, a presigned-URL proxy). Bodies are streamed both ways,
//! with no size limit. Listing (`remote pull`) uses WebDAV `PROPFIND`, where the server has it.

use std::io::{self, Write};

use super::Source;

pub(super) struct Http {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Http {
    pub(super) fn open(url: &str, token: Option<String>) -> Result<Http, String> {
        let base = if url.ends_with('/') { url.to_owned() } else { format!("{url}/") };
        base.parse::<ureq::http::Uri>()
            .map_err(|err| format!("remote {}: {err}", crate::tier::remote::redact(url)))?;
        Ok(Http { base, agent: super::agent(), token })
    }

    fn request(&self, method: &str, path: &str) -> ureq::http::request::Builder {
        let mut request =
            ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request
    }

    fn run(
        &self,
        request: ureq::http::request::Builder,
        body: impl ureq::AsSendBody,
    ) -> io::Result<ureq::http::Response<ureq::Body>> {
        super::send(&self.agent, request, body)
    }
}

impl super::Backend for Http {
    fn get(&self, path: &str, sink: &mut dyn Write) -> io::Result<bool> {
        let response = self.run(self.request("GET", path), ())?;
        match response.status().as_u16() {
            200 => {
                io::copy(&mut response.into_body().into_reader(), sink)?;
                Ok(true)
            }
            404 => Ok(false),
            status => Err(super::status_error("GET", path, status)),
        }
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let response = self.run(self.request("HEAD", path), ())?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(super::status_error("HEAD", path, status)),
        }
    }

    fn put(&self, path: &str, source: Source<'_>) -> io::Result<()> {
        let response = match source {
            Source::Bytes(bytes) => self.run(self.request("PUT", path), bytes)?,
            Source::File(file) => {
                self.run(self.request("PUT", path), std::fs::File::open(file)?)?
            }
        };
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(super::status_error("PUT", path, status)),
        }
    }

    fn entry_keys(&self) -> io::Result<Vec<String>> {
        let response = self.run(self.request("PROPFIND", "ac/").header("Depth", "1"), ())?;
        match response.status().as_u16() {
            207 => {}
            404 => return Ok(Vec::new()),
            status => {
                return Err(io::Error::other(format!(
                    "PROPFIND ac/ answered {status}: this HTTP cache cannot list its entries \
                     (nginx needs the dav-ext module's `dav_ext_methods PROPFIND`)"
                )));
            }
        }
        let text = response.into_body().read_to_string().map_err(super::ureq_error)?;
        Ok(super::entry_names_in(&text))
    }

    fn ping(&self) -> io::Result<()> {
        let response = self.run(self.request("HEAD", ""), ())?;
        match response.status().as_u16() {
            401 | 403 => Err(super::status_error("HEAD", "", response.status().as_u16())),
            _ => Ok(()),
        }
    }
}
