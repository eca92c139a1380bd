//! TLS material and rustls configurations for both ends.
//!
//! Both ends trust only ferry's own CA (never system roots), speak TLS 1.3
//! only and require certificates both ways: the hub a client-auth certificate
//! from the ep, the ep a server-auth certificate naming the hub.

pub mod crl;
mod loaded;

pub use loaded::{EpTls, HubTls};

use crate::proto::ALPN;
use anyhow::{Context, Result, bail};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use std::{path::Path, sync::Arc};

/// ring, with AES-128-GCM preferred: 128-bit keys are ample for a tunnel,
/// and it costs less CPU per byte than AES-256-GCM (see BENCHMARKS.md).
/// The others stay available, ChaCha20 for CPUs without AES instructions.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        _ => 2,
    });
    Arc::new(p)
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let cannot = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot read certificate file {}: {e}", path.display())
    };
    let pem = crate::files::read_regular(path, crate::files::MAX_NAMED).map_err(|e| cannot(&e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cannot(&e))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Loads a private key, refusing one that other users could read: a leaked
/// ep key is a way into the hub.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = crate::secret_file::read(path, "private key file")?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("cannot read private key file {}: {e}", path.display()))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(ca)? {
        store
            .add(cert)
            .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
    }
    Ok(Arc::new(store))
}

/// Reads a PEM certificate revocation list.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let cannot = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot read revocation list {}: {e}", path.display())
    };
    let pem = crate::files::read_regular(path, crate::files::MAX_NAMED).map_err(|e| cannot(&e))?;
    CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cannot(&e))
}

/// The hub's CA, certificate and key as loaded at start, so that a new
/// revocation list rebuilds only the verifier: a key file broken meanwhile
/// is not re-read, and a CRL problem is reported as one.
pub struct ServerMaterial {
    roots: Arc<RootCertStore>,
    /// The CA certificate: what a revocation list must be signed by.
    ca: CertificateDer<'static>,
    /// Every certificate `tls.ca` holds.
    cas: Vec<CertificateDer<'static>>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ServerMaterial {
    /// Whether `chain` (a client certificate, then the intermediates it
    /// was presented with) is one this CA issued, valid now (revocation
    /// aside): a session whose certificate is not, after the CA was
    /// replaced, can open no channel any more.
    pub fn issued(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((cert, intermediates)) = chain.split_first() else {
            return false;
        };
        // Against every CA `tls.ca` holds (a bundle during a rollover),
        // as the doors' verifier checks.
        WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .is_ok_and(|v| {
                let now = rustls::pki_types::UnixTime::now();
                v.verify_client_cert(cert, intermediates, now).is_ok()
            })
    }

    /// Whether `other` trusts the same CAs.
    pub fn same_ca(&self, other: &ServerMaterial) -> bool {
        self.cas == other.cas
    }

    pub fn load(paths: &crate::config::TlsPaths) -> Result<Self> {
        let certs = load_certs(&paths.cert)?;
        let key = load_key(&paths.key)?;
        // Pair them now, so a mismatch is named at start-up.
        rustls::crypto::ring::sign::any_supported_type(&key)
            .with_context(|| format!("{} is not a usable private key", paths.key.display()))?;
        let cas = load_certs(&paths.ca)?;
        let ca = cas
            .first()
            .cloned()
            .with_context(|| format!("{} holds no certificate", paths.ca.display()))?;
        let roots = roots(&paths.ca)?;
        let dated = verify_own_server_cert(roots.clone(), &certs).with_context(|| {
            format!(
                "{} is not a certificate eps trusting {} accept",
                paths.cert.display(),
                paths.ca.display()
            )
        })?;
        if let Some(why) = dated {
            tracing::warn!(
                "{}: {why}: eps refuse it until it is renewed (ferry hub gen-cert) or this \
                 machine's clock is set right",
                paths.cert.display()
            );
        }
        Ok(ServerMaterial {
            roots,
            ca,
            cas,
            certs,
            key,
        })
    }

    /// The revocation list at `path`, checked against this CA.
    pub fn load_crl(&self, path: &Path) -> Result<crl::Crl> {
        crl::load(path, &self.ca)
    }

    /// The hub's configuration, shared by the control and channel ports.
    pub fn server_config(&self, crl: Option<&crl::Crl>) -> Result<Arc<ServerConfig>> {
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        if let Some(crl) = crl {
            // Only ep certificates are ever revoked; the CA is ours.
            builder = builder
                .with_crls(crl.ders.clone())
                .only_check_end_entity_revocation();
        }
        let verifier = builder
            .build()
            .context("cannot build the client-certificate verifier")?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .context("the hub certificate does not match its key")?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// The enrol door's configuration: the hub proves itself, the client
    /// (an ep without a certificate yet) proves nothing here.
    pub fn enrol_config(&self) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .context("the hub certificate does not match its key")?;
        config.alpn_protocols = vec![crate::proto::ENROL_ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// The client side of the enrol door: only the CA whose fingerprint the
/// invite carries is trusted, and no client certificate is offered.
pub fn enrol_client_config(ca_der: &[u8]) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .context("the hub's CA certificate is not usable")?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("cannot build the server-certificate verifier")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![crate::proto::ENROL_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Checks `cert` as the hub's control door will: a client certificate
/// issued by the CA `ca_der` and valid now. `ferry ep join` runs it on the
/// certificate the enrol door returns, so a broken or hostile answer is
/// refused before anything is written, not at the first login.
pub fn verify_client_cert(
    ca_der: &[u8],
    cert: &CertificateDer<'_>,
    at: rustls::pki_types::UnixTime,
) -> Result<()> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .context("the hub's CA certificate is not usable")?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("cannot build the client-certificate verifier")?;
    verifier
        .verify_client_cert(cert, &[], at)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Checks the hub's own certificate `chain` (its certificate first) as an
/// ep trusting `roots` will: issued by that CA, for a server, for one of
/// the names it holds (a wildcard for one name it covers; the hub cannot
/// know which name eps dial). A hub started or reloaded with one no ep
/// would accept serves no one, and says so only in TLS alerts. Only being
/// out of its dates is not refused (a clock set wrong, or a certificate
/// that expired while the hub ran, must not stop the hub or every other
/// change a reload brings): Ok(Some(why)), for a warning.
pub fn verify_own_server_cert(
    roots: Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
) -> Result<Option<String>> {
    use rustls::{CertificateError, client::danger::ServerCertVerifier};
    let Some((cert, rest)) = chain.split_first() else {
        bail!("it holds no certificate");
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .context("cannot build the server-certificate verifier")?;
    let now = rustls::pki_types::UnixTime::now();
    let mut refused = None;
    for name in subject_names(cert) {
        let host = match name.strip_prefix("*.") {
            Some(parent) => format!("ferry-check.{parent}"),
            None => name,
        };
        let Ok(host) = rustls::pki_types::ServerName::try_from(host) else {
            continue;
        };
        match verifier.verify_server_cert(cert, rest, &host, &[], now) {
            Ok(_) => return Ok(None),
            Err(rustls::Error::InvalidCertificate(
                e @ (CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. }),
            )) => return Ok(Some(format!("it is out of its dates ({e})"))),
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    match refused {
        Some(e) => bail!("an ep trusting tls.ca would refuse it ({e})"),
        None => bail!("it names no host or address an ep could dial (subjectAltName)"),
    }
}

/// A resumed TLS session skips certificate verification: rustls restores
/// the client certificate from the session. Checks what verification would:
/// the validity window and the revocation list.
pub fn check_resumed(
    cert: &CertificateDer<'_>,
    revoked: &std::collections::HashSet<String>,
) -> Result<(), &'static str> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| "unreadable certificate")?;
    if !parsed.validity().is_valid() {
        return Err("certificate expired or not yet valid");
    }
    if revoked.contains(&hex(parsed.raw_serial())) {
        return Err("certificate revoked");
    }
    Ok(())
}

/// The ep's configuration for both its control and channel connections.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .context("cannot build the server-certificate verifier")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Why a hub trusting `ca` (ferry's one CA issues hub and eps alike)
/// would refuse the ep certificate `cert` now, if it would: another CA's,
/// out of its dates, not for a client. Said at the ep's check and start,
/// rather than only as the hub's TLS alert at each login.
pub fn own_client_cert_refused(ca: &Path, cert: &Path) -> Option<String> {
    let verify = || -> Result<()> {
        let chain = load_certs(cert)?;
        let Some((first, rest)) = chain.split_first() else {
            bail!("it holds no certificate");
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
            .build()
            .context("cannot build the client-certificate verifier")?;
        let now = rustls::pki_types::UnixTime::now();
        verifier.verify_client_cert(first, rest, now)?;
        Ok(())
    };
    verify().err().map(|e| {
        format!(
            "{}: a hub trusting {} would refuse it ({e:#})",
            cert.display(),
            ca.display()
        )
    })
}

/// The common name of a certificate: an ep's name as `gen-cert` wrote it.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The names and addresses a certificate is valid for, names first.
pub fn subject_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut ips = Vec::new();
    for n in &san.value.general_names {
        match n {
            GeneralName::DNSName(d) => names.push(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => ips.push(
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                        .to_string(),
                ),
                16 => ips.push(
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                        .to_string(),
                ),
                _ => {}
            },
            _ => {}
        }
    }
    names.extend(ips);
    names
}

/// Days until a certificate expires (negative once expired).
pub fn days_left(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let not_after = parsed.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some((not_after - now) / 86_400)
}

/// A certificate's serial number: its DER bytes in hex, the same form
/// `crl_serials` gives, so the two compare directly.
pub fn serial_hex(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(hex(parsed.raw_serial()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serial numbers listed in the PEM revocation list at `path`.
pub fn crl_serials(path: &Path) -> Result<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    for der in load_crls(path)? {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| {
            anyhow::anyhow!("{} is not a valid revocation list: {e}", path.display())
        })?;
        out.extend(crl.iter_revoked_certificates().map(|r| hex(r.raw_serial())));
    }
    Ok(out)
}
