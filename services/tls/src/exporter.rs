//! The tls-exporter channel binding (RFC 9266) of a TLS 1.3 connection driven through
//! rustls' unbuffered API, which, unlike the buffered one, has no `export_keying_material`.
//!
//! rustls hands the connection's exporter master secret to the configuration's key log
//! (label `EXPORTER_SECRET`) while it processes the client's first flight; [`ExporterSecret`]
//! is that key log, and it asks for no other secret. The call is synchronous inside
//! `process_tls_records`, so the secret waits in a thread-local slot that the same call's
//! caller empties before it returns ([`capture`]). From the secret, [`tls_exporter`] derives
//! the binding as RFC 8446 §7.5 defines the exporter, with the negotiated suite's own HKDF
//! and hash from rustls' provider: no primitive is implemented here.

use std::cell::RefCell;

use rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use rustls::{KeyLog, SupportedCipherSuite};

/// RFC 9266 §2: the exporter label; the context is absent.
const LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// RFC 9266 §2: 32 bytes.
pub(crate) const EXPORTER_LEN: usize = 32;

/// rustls' key log label of the exporter master secret.
const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

thread_local! {
    /// The exporter master secret logged by the `process_tls_records` call running on this
    /// thread, until [`capture`] takes it.
    static LOGGED: RefCell<Option<OkmBlock>> = const { RefCell::new(None) };
}

/// The key log of client-stream configurations: keeps the exporter master secret for
/// [`capture`] and asks rustls for nothing else.
#[derive(Debug)]
pub(crate) struct ExporterSecret;

impl KeyLog for ExporterSecret {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == EXPORTER_SECRET {
            LOGGED.with(|logged| *logged.borrow_mut() = Some(OkmBlock::new(secret)));
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET
    }
}

/// Runs `process` (one `process_tls_records` call and the handling of its state) and
/// returns what it returned with the exporter master secret it made rustls log, if any.
/// The slot is emptied first, so that a secret never outlives the call that logged it.
pub(crate) fn capture<T>(process: impl FnOnce() -> T) -> (T, Option<OkmBlock>) {
    LOGGED.with(|logged| logged.borrow_mut().take());
    let result = process();
    (result, LOGGED.with(|logged| logged.borrow_mut().take()))
}

/// RFC 8446 §7.5 TLS-Exporter("EXPORTER-Channel-Binding", "", 32) from the exporter master
/// secret of a TLS 1.3 connection with `suite`.
pub(crate) fn tls_exporter(
    suite: SupportedCipherSuite,
    exporter_master_secret: &OkmBlock,
) -> Option<[u8; EXPORTER_LEN]> {
    let SupportedCipherSuite::Tls13(suite) = suite else {
        return None;
    };
    let empty_hash = suite.common.hash_provider.hash(&[]);
    let hkdf = suite.hkdf_provider;
    // Derive-Secret(Secret, label, "") ...
    let derived = expand_label(
        hkdf.expander_for_okm(exporter_master_secret).as_ref(),
        LABEL,
        empty_hash.as_ref(),
        suite.common.hash_provider.output_len(),
        |expander, info| Some(expander.expand_block(info)),
    )?;
    // ... then HKDF-Expand-Label(that, "exporter", Hash(context_value), length).
    expand_label(
        hkdf.expander_for_okm(&derived).as_ref(),
        b"exporter",
        empty_hash.as_ref(),
        EXPORTER_LEN,
        |expander, info| {
            let mut out = [0; EXPORTER_LEN];
            expander.expand_slice(info, &mut out).ok()?;
            Some(out)
        },
    )
}

/// RFC 8446 §7.1 HKDF-Expand-Label: `info` is the HkdfLabel structure, given in pieces.
fn expand_label<T>(
    expander: &dyn HkdfExpander,
    label: &[u8],
    context: &[u8],
    length: usize,
    expand: impl FnOnce(&dyn HkdfExpander, &[&[u8]]) -> Option<T>,
) -> Option<T> {
    const PREFIX: &[u8] = b"tls13 ";
    let length = u16::try_from(length).ok()?.to_be_bytes();
    let label_length = [u8::try_from(PREFIX.len() + label.len()).ok()?];
    let context_length = [u8::try_from(context.len()).ok()?];
    expand(
        expander,
        &[
            &length,
            &label_length,
            PREFIX,
            label,
            &context_length,
            context,
        ],
    )
}
