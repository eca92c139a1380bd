//! The revocation list as the hub trusts it: only CRLs our CA signed, and
//! never none. rustls takes an empty list of CRLs as "check nothing", so a
//! `crl.pem` emptied, truncated, saved as DER or replaced by a pasted
//! certificate would let every revoked ep back in; such a file is refused
//! instead (at start-up, by `check`, and on a running hub, which keeps the
//! list it had).

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use std::{collections::HashSet, path::Path};

/// A checked revocation list: its CRLs for the verifier, the serials they
/// list for the hub's own checks.
#[derive(Clone)]
pub struct Crl {
    pub ders: Vec<CertificateRevocationListDer<'static>>,
    pub serials: HashSet<String>,
}

/// The CRLs in `path`, each signed by `ca`; at least one.
pub fn load(path: &Path, ca: &CertificateDer<'_>) -> Result<Crl> {
    let ders = super::load_crls(path)?;
    if ders.is_empty() {
        bail!(
            "{} holds no revocation list (empty, cut short, DER instead of PEM, or not a CRL): \
             revocation would be off; regenerate it with `ferry hub revoke` or `gen-cert`",
            path.display()
        );
    }
    let (_, ca) = x509_parser::parse_x509_certificate(ca.as_ref())
        .map_err(|e| anyhow::anyhow!("the CA certificate does not parse: {e}"))?;
    let mut serials = HashSet::new();
    for der in &ders {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| {
            anyhow::anyhow!("{} is not a valid revocation list: {e}", path.display())
        })?;
        if crl.issuer() != ca.subject() {
            bail!(
                "{} is issued by {}, not by the CA ({})",
                path.display(),
                crl.issuer(),
                ca.subject()
            );
        }
        crl.verify_signature(ca.public_key())
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("{} is not signed by the CA", path.display()))?;
        serials.extend(
            crl.iter_revoked_certificates()
                .map(|r| super::hex(r.raw_serial())),
        );
    }
    Ok(Crl { ders, serials })
}
