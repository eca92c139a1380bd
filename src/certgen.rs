//! `ferry hub gen-cert`: a private CA, the hub's server certificate and one
//! client certificate per ep, all ECDSA P-256.

use crate::files::write_file;
use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};
use time::{Duration, OffsetDateTime};

/// The CA outlives many rounds of leaf certificates.
pub const CA_DAYS: i64 = 3650;
/// Hub and ep certificates: re-issue with `gen-cert` (and `--force`) before then.
pub const LEAF_DAYS: i64 = 730;

#[derive(Debug, Clone, Default)]
pub struct GenCert {
    pub dir: PathBuf,
    /// DNS names for the hub certificate.
    pub hub_names: Vec<String>,
    /// IP addresses for the hub certificate.
    pub hub_ips: Vec<IpAddr>,
    /// One client certificate per name.
    pub eps: Vec<String>,
    /// Replace existing hub/ep files instead of refusing.
    pub force: bool,
}

/// What `gen-cert` did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Replaced ep certificates, now listed in `crl.pem`.
    pub revoked: Vec<String>,
}

/// Paths of the files an ep needs besides its config.
pub fn ep_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("ep-{name}.pem")),
        dir.join(format!("ep-{name}.key")),
    )
}

impl GenCert {
    /// Writes what is missing or asked for. An empty revocation list is
    /// written beside a new CA, so a hub can follow it from the start; an ep
    /// certificate replaced with `force` is revoked in it.
    pub fn run(&self) -> Result<Report> {
        create_private_dir(&self.dir)?;
        let mut written = Vec::new();
        let issuer = self.ca(&mut written)?;
        self.hub_cert(&issuer, &mut written)?;
        let replaced = self.ep_certs(&issuer, &mut written)?;
        let revoked = self.update_crl(&issuer, replaced, &mut written)?;
        Ok(Report { written, revoked })
    }

    /// The existing CA, or a new one when neither of its files exists.
    fn ca(&self, written: &mut Vec<PathBuf>) -> Result<Issuer<'static, KeyPair>> {
        let (ca_pem, ca_key) = (self.dir.join("ca.pem"), self.dir.join("ca.key"));
        Ok(match (ca_pem.exists(), ca_key.exists()) {
            (true, true) => load_ca(&ca_pem, &ca_key)?,
            (false, false) => {
                let (params, key, pem) = new_ca()?;
                write_file(&ca_pem, pem.as_bytes(), 0o644, false)?;
                write_file(&ca_key, key.serialize_pem().as_bytes(), 0o600, false)?;
                written.extend([ca_pem.clone(), ca_key.clone()]);
                Issuer::new(params, key)
            }
            _ => bail!(
                "{} and {} must both exist or both be absent; restore the missing one \
                 or move both away to start a new CA",
                ca_pem.display(),
                ca_key.display()
            ),
        })
    }

    /// The hub's certificate, when names were asked for or it is missing
    /// (then for localhost).
    fn hub_cert(&self, issuer: &Issuer<'_, KeyPair>, written: &mut Vec<PathBuf>) -> Result<()> {
        let hub_pem = self.dir.join("hub.pem");
        let asked_for_hub = !self.hub_names.is_empty() || !self.hub_ips.is_empty();
        let mut sans: Vec<SanType> = Vec::new();
        let mut names = self.hub_names.clone();
        let mut ips = self.hub_ips.clone();
        if !asked_for_hub {
            match hub_pem.exists() {
                // `--force` alone renews it (the hub's advice as it nears
                // its end), for the names and addresses it has; with
                // `--ep`, only the eps' are replaced.
                true if !self.force || !self.eps.is_empty() => return Ok(()),
                true => (names, ips) = names_of(&hub_pem)?,
                false => {
                    names.push("localhost".into());
                    ips.extend(["127.0.0.1".parse::<IpAddr>()?, "::1".parse()?]);
                }
            }
        }
        for n in &names {
            // An address as a name: eps dialling the address refuse it.
            anyhow::ensure!(
                n.parse::<IpAddr>().is_err() && !n.contains(':'),
                "--hub-name {n:?} is an address, not a name: give it with --hub-ip (a port \
                 goes in the ep's `hub`, not in the certificate)"
            );
            sans.push(SanType::DnsName(
                n.clone()
                    .try_into()
                    .with_context(|| format!("--hub-name {n:?} is not a DNS name"))?,
            ));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        let cn = names
            .first()
            .cloned()
            .or_else(|| ips.first().map(|i| i.to_string()))
            .unwrap_or_else(|| "ferry hub".into());
        let (cert, key) = leaf(issuer, &cn, sans, ExtendedKeyUsagePurpose::ServerAuth)?;
        let hub_key = self.dir.join("hub.key");
        write_file(&hub_pem, cert.as_bytes(), 0o644, self.force)?;
        write_file(&hub_key, key.as_bytes(), 0o600, self.force)?;
        written.extend([hub_pem, hub_key]);
        Ok(())
    }

    /// One certificate per ep asked for; returns the (name, serial) of each
    /// certificate it replaced.
    fn ep_certs(
        &self,
        issuer: &Issuer<'_, KeyPair>,
        written: &mut Vec<PathBuf>,
    ) -> Result<Vec<(String, String)>> {
        let mut replaced = Vec::new();
        for name in &self.eps {
            crate::config::check_service_name(name).map_err(|_| {
                anyhow::anyhow!("ep name {name:?} must be 1-64 letters, digits, '-' or '_'")
            })?;
            let (pem, keyfile) = ep_files(&self.dir, name);
            let old_serial = if self.force && pem.exists() {
                crate::tls::load_certs(&pem)
                    .ok()
                    .and_then(|c| crate::tls::serial_hex(&c[0]))
            } else {
                None
            };
            let (cert, key) = leaf(issuer, name, vec![], ExtendedKeyUsagePurpose::ClientAuth)?;
            write_file(&pem, cert.as_bytes(), 0o644, self.force)?;
            write_file(&keyfile, key.as_bytes(), 0o600, self.force)?;
            written.extend([pem, keyfile]);
            if let Some(serial) = old_serial {
                replaced.push((name.clone(), serial));
            }
        }
        Ok(replaced)
    }

    /// Adds the `replaced` serials to the revocation list, writing it when
    /// it changes or is missing; returns what it revoked, for the report.
    fn update_crl(
        &self,
        issuer: &Issuer<'_, KeyPair>,
        replaced: Vec<(String, String)>,
        written: &mut Vec<PathBuf>,
    ) -> Result<Vec<String>> {
        let crl_path = self.dir.join("crl.pem");
        let mut revoked = Vec::new();
        if !replaced.is_empty() || !crl_path.exists() {
            let _held = lock_crl(&crl_path)?;
            let mut serials = read_revoked(&crl_path)?;
            for (name, serial) in replaced {
                revoked.push(format!("ep {name} (serial {serial})"));
                serials.insert(serial);
            }
            write_crl(&crl_path, issuer, &serials)?;
            written.push(crl_path);
        }
        Ok(revoked)
    }
}

/// Held from reading the list to writing it back: `ferry hub revoke` and
/// the hub revoking a re-enrolled ep's old certificate at the same moment
/// would otherwise each write the list it read, and one revocation would
/// be lost without a word (the revoked ep still let in).
fn lock_crl(crl_path: &Path) -> Result<fs::File> {
    crate::files::lock(&crl_path.with_extension("lock"))
}

/// The serials `crl_path` lists now, to add to. A file there that holds
/// no revocation list (emptied, cut short, DER, a certificate) is not
/// rewritten: a new list from it would silently drop every earlier
/// revocation.
fn read_revoked(crl_path: &Path) -> Result<std::collections::BTreeSet<String>> {
    if !crl_path.exists() {
        return Ok(Default::default());
    }
    if crate::tls::load_crls(crl_path)?.is_empty() {
        anyhow::bail!(
            "{} holds no revocation list, so the certificates it revoked are not known: \
             restore it from a backup (or move it away to start a new, empty list) and run this again",
            crl_path.display()
        );
    }
    crate::tls::crl_serials(crl_path)?
        .iter()
        .map(|s| normal_serial(s).with_context(|| format!("in {}", crl_path.display())))
        .collect()
}

/// Writes `serials` as the CA's revocation list (possibly empty).
fn write_crl(
    crl_path: &Path,
    issuer: &Issuer<'_, KeyPair>,
    serials: &std::collections::BTreeSet<String>,
) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let revoked_certs = serials
        .iter()
        .map(|hex| -> Result<_> {
            Ok(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&unhex(hex)?),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<_>>()?;
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(CA_DAYS),
        crl_number: SerialNumber::from(now.unix_timestamp() as u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let pem = params.signed_by(issuer)?.pem()?;
    write_file(crl_path, pem.as_bytes(), 0o644, true)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the operating system's random source failed");
    bytes[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    // An hour back so a hub whose clock runs a little behind still accepts it.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn new_ca() -> Result<(CertificateParams, KeyPair, String)> {
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    validity(&mut params, CA_DAYS);
    let pem = params.self_signed(&key)?.pem();
    Ok((params, key, pem))
}

pub(crate) fn load_ca(pem: &Path, key: &Path) -> Result<Issuer<'static, KeyPair>> {
    // Whoever can read the CA key can sign a hub certificate of their own.
    let key_pem = String::from_utf8(crate::secret_file::read(key, "CA key")?)
        .map_err(|_| anyhow::anyhow!("{} is not a PEM private key", key.display()))?;
    let keypair = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let cert_pem = crate::files::read_regular(pem, crate::files::MAX_NAMED)
        .map_err(anyhow::Error::from)
        .and_then(|b| String::from_utf8(b).map_err(anyhow::Error::from))
        .with_context(|| format!("cannot read {}", pem.display()))?;
    ca_holds_key(&cert_pem, &keypair).map_err(|why| anyhow::anyhow!("{}: {why}", pem.display()))?;
    Issuer::from_ca_cert_pem(&cert_pem, keypair)
        .with_context(|| format!("{} is not a PEM CA certificate", pem.display()))
}

/// Whether `cert_pem` is the certificate of `key`: rcgen does not check,
/// and a certificate signed with another CA's key (ca.key copied from
/// another hub, a CA replaced file by file) is refused by every hub and
/// ep, so a revocation list or an ep certificate made with it would be
/// written, announced, and never count.
fn ca_holds_key(cert_pem: &str, key: &KeyPair) -> Result<(), String> {
    let der = ::pem::parse(cert_pem).map_err(|_| "not a PEM certificate".to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents())
        .map_err(|_| "not a readable certificate".to_string())?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(
            "the CA key does not belong to this certificate (ca.pem and ca.key are of two \
             different CAs)"
                .into(),
        );
    }
    Ok(())
}

/// The names and addresses the certificate at `pem` is for.
fn names_of(pem: &Path) -> Result<(Vec<String>, Vec<IpAddr>)> {
    let certs = crate::tls::load_certs(pem)?;
    let first = certs
        .first()
        .with_context(|| format!("{} holds no certificate", pem.display()))?;
    let (mut names, mut ips) = (Vec::new(), Vec::new());
    for n in crate::tls::subject_names(first) {
        match n.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(n),
        }
    }
    anyhow::ensure!(
        !names.is_empty() || !ips.is_empty(),
        "{} names no host; give --hub-name or --hub-ip",
        pem.display()
    );
    Ok((names, ips))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let params = leaf_params(cn, sans, usage);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// An ep certificate for the key in `csr_pem` (whose signature proves the
/// requester holds it), named `cn` whatever the request asks for; the
/// certificate and its serial.
pub fn sign_csr(ca_pem: &Path, ca_key: &Path, csr_pem: &str, cn: &str) -> Result<(String, String)> {
    sign_request(&load_ca(ca_pem, ca_key)?, csr_pem, cn)
}

/// `sign_csr` by a CA already loaded (the fuzz target's way in: the
/// request is what an invite holder sends the enrol door).
#[doc(hidden)]
pub fn sign_request(
    issuer: &Issuer<'_, KeyPair>,
    csr_pem: &str,
    cn: &str,
) -> Result<(String, String)> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .context("the certificate request is malformed or its signature is wrong")?;
    let params = leaf_params(cn, vec![], ExtendedKeyUsagePurpose::ClientAuth);
    let cert = params.signed_by(&csr.public_key, issuer)?;
    let der = rustls::pki_types::CertificateDer::from(cert.der().to_vec());
    let serial = crate::tls::serial_hex(&der).context("the new certificate has no serial")?;
    Ok((cert.pem(), serial))
}

fn leaf_params(cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, LEAF_DAYS);
    params
}

fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}

/// `ferry hub revoke`: adds ep certificates to `DIR/crl.pem`, signed by the
/// CA in `DIR`. A hub whose `tls.crl` names that file picks it up within a
/// second and closes the revoked eps' sessions.
pub fn revoke(dir: &Path, eps: &[String], serials: &[String]) -> Result<(PathBuf, Vec<String>)> {
    let mut all = Vec::new();
    let mut added = Vec::new();
    for name in eps {
        let (pem, _) = ep_files(dir, name);
        let cert = crate::tls::load_certs(&pem)?;
        let serial = crate::tls::serial_hex(&cert[0])
            .with_context(|| format!("{} is not a readable certificate", pem.display()))?;
        added.push(format!("ep {name} (serial {serial})"));
        all.push(serial);
    }
    let typed = serials
        .iter()
        .map(|s| normal_serial(s))
        .collect::<Result<Vec<_>>>()?;
    added.extend(typed.iter().map(|s| format!("serial {s}")));
    all.extend(typed);
    let ca = CaFiles {
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
        crl: dir.join("crl.pem"),
    };
    revoke_serials(&ca, &all)?;
    Ok((ca.crl, added))
}

/// Where a CA's files are: its certificate, its key, and the revocation
/// list it signs (the hub's `tls.ca`, `enrol.ca_key` and `tls.crl` need not
/// share a folder).
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: PathBuf,
}

/// Adds `serials` (hex, as a user may type them: `normal_serial`) to the
/// list in `ca.crl`, signed again by that CA.
pub fn revoke_serials(ca: &CaFiles, serials: &[String]) -> Result<()> {
    let issuer = load_ca(&ca.cert, &ca.key)?;
    let _held = lock_crl(&ca.crl)?;
    let mut revoked = read_revoked(&ca.crl)?;
    for serial in serials {
        // A serial from a file a person may have edited (enrolled.json).
        revoked.insert(normal_serial(serial)?);
    }
    write_crl(&ca.crl, &issuer, &revoked)
}

/// A serial as a user may type it ("0x1F:0A…") in the form the list and
/// `tls::serial_hex` use.
pub(crate) fn normal_serial(s: &str) -> Result<String> {
    let s = s
        .trim()
        .trim_start_matches("0x")
        .replace(':', "")
        .to_ascii_lowercase();
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("serial {s:?} is not a hex serial number (e.g. \"1f0a...\")");
    }
    Ok(s)
}

/// The bytes of serial `s`, refused unless it is hex (`normal_serial`).
fn unhex(s: &str) -> Result<Vec<u8>> {
    let s = normal_serial(s)?;
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
        .collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with a new CA (and its empty CRL).
    fn ca_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        GenCert {
            dir: dir.path().into(),
            ..Default::default()
        }
        .run()
        .unwrap();
        dir
    }

    /// A serial from enrolled.json, which a person may have edited, is
    /// refused with its cause; the list is left as it was.
    #[test]
    fn a_serial_that_is_not_hex_is_refused_not_a_panic() {
        let dir = ca_dir();
        let ca = CaFiles {
            cert: dir.path().join("ca.pem"),
            key: dir.path().join("ca.key"),
            crl: dir.path().join("crl.pem"),
        };
        let before = fs::read(&ca.crl).unwrap();
        for bad in ["abc", "zz", "é1", "1é", ""] {
            let e = revoke_serials(&ca, &[bad.to_string()]).unwrap_err();
            assert!(e.to_string().contains("not a hex serial"), "{bad}: {e}");
        }
        assert_eq!(fs::read(&ca.crl).unwrap(), before);
        revoke_serials(&ca, &["0x1F:0a".into()]).unwrap();
        assert_eq!(
            read_revoked(&ca.crl)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["1f0a"]
        );
    }

    /// Whatever an invite holder's request asks for (another name, the
    /// hub's names, a CA's powers, server use), the certificate signed is
    /// an ep's: the name the invite gives, client use only, no names
    /// besides, not a CA; and a request whose signature is not its key's
    /// is refused.
    #[test]
    fn a_request_asking_for_more_than_an_ep_gets_only_an_ep_certificate() {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let dir = ca_dir();
        let mut asked = CertificateParams::new(vec!["hub.example".into()]).unwrap();
        asked.distinguished_name.push(DnType::CommonName, "hub");
        asked
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        asked.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        asked.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let (ca, ca_key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));

        let (pem, serial) = sign_csr(&ca, &ca_key, &csr, "friend").unwrap();
        let der = ::pem::parse(&pem).unwrap().into_contents();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let cns: Vec<_> = cert.subject().iter_common_name().collect();
        assert_eq!(cns.len(), 1);
        assert_eq!(cns[0].as_str().unwrap(), "friend");
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && eku.other.is_empty() && !eku.any);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
        assert_eq!(
            &*cert.public_key().subject_public_key.data,
            key.public_key_raw()
        );
        assert_eq!(normal_serial(&cert.raw_serial_as_string()).unwrap(), serial);

        // The same request with one bit of its signature changed (the
        // last byte of the signature's last integer: still well-formed).
        let mut forged = asked.serialize_request(&key).unwrap().der().to_vec();
        *forged.last_mut().unwrap() ^= 1;
        let forged = ::pem::Pem::new("CERTIFICATE REQUEST", forged);
        let e = sign_csr(&ca, &ca_key, &::pem::encode(&forged), "friend").unwrap_err();
        assert!(
            format!("{e:#}").contains("malformed or its signature is wrong"),
            "{e:#}"
        );
    }
}
