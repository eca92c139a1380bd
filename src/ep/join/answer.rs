//! The hub's reply to an enrolment, checked before anything but the key is
//! written. The hub proved only that it holds a certificate from the
//! invite's CA; what it sends back is still checked as input: the
//! certificate must be for the key made here and issued by that CA, and
//! the CA written is the one the line's fingerprint matched, not the
//! reply's own copy.

use crate::{
    enrol::{Offered, Reply},
    secret::Secret,
};
use anyhow::{Result, bail};
use rcgen::PublicKeyData;
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// An enrolment the hub granted, as it will be written.
pub(super) struct Enrolled {
    pub ep: String,
    /// The ep's certificate (PEM), checked.
    pub cert: String,
    /// The CA the invite's fingerprint matched (PEM).
    pub ca: String,
    pub token: Secret,
    pub control: u16,
    pub channel: u16,
    pub services: Vec<Offered>,
}

pub(super) fn check(reply: Reply, key: &rcgen::KeyPair, ca_der: &[u8]) -> Result<Enrolled> {
    let (ep, cert, token, control, channel, services) = match reply {
        Reply::Enrolled {
            ep,
            cert,
            ca: _,
            token,
            control_port,
            channel_port,
            services,
        } => (ep, cert, token, control_port, channel_port, services),
        Reply::Refused { reason } => bail!(
            "the hub refused the enrolment: {}",
            crate::proto::shown(&reason)
        ),
    };
    let cert = only_certificate(&cert).map_err(unusable)?;
    if !issued_for(&cert, key) {
        return Err(unusable(
            "its certificate is not for the key made here".into(),
        ));
    }
    crate::tls::verify_client_cert(ca_der, &cert, checked_at(&cert)).map_err(|e| {
        unusable(format!(
            "its certificate is not an ep certificate from the invite's CA ({e:#})"
        ))
    })?;
    // The name is printed and written, and the certificate's name is who
    // the ep logs in as: a hub sends a valid name, the same in both.
    if crate::config::check_service_name(&ep).is_err() {
        return Err(unusable(format!("{ep:?} is not an ep name")));
    }
    if crate::tls::common_name(&cert).as_deref() != Some(ep.as_str()) {
        return Err(unusable(format!(
            "its certificate does not name the ep {ep}"
        )));
    }
    Ok(Enrolled {
        ep,
        cert: to_pem(&cert),
        ca: to_pem(ca_der),
        token,
        control,
        channel,
        services,
    })
}

/// When the new certificate is checked: now, or its start where this
/// machine's clock is behind it. Only the hub checks it at log-in, by the
/// hub's clock, so a slow clock here must not throw away a certificate
/// the invite has already been spent on; it is said instead.
fn checked_at(cert: &CertificateDer<'_>) -> rustls::pki_types::UnixTime {
    let now = rustls::pki_types::UnixTime::now();
    let start = x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.validity().not_before.timestamp())
        .ok()
        .and_then(|t| u64::try_from(t).ok());
    match start {
        Some(start) if start > now.as_secs() => {
            let behind = start - now.as_secs();
            // The hub starts certificates an hour back for slow clocks.
            eprintln!(
                "warning: this machine's clock is over an hour behind the hub's (the new \
                 certificate starts {behind} s from now by this clock); set it right (NTP), \
                 or TLS with the hub may fail"
            );
            rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(start))
        }
        _ => now,
    }
}

/// Refuses an answer the hub should never send. The invite is used by
/// then, so the message says so.
fn unusable(why: String) -> anyhow::Error {
    anyhow::anyhow!(
        "the hub's answer is not usable: {why}. Nothing was written; the invite is now used, \
         so ask the hub's operator for a new one (and tell them: a ferry hub does not answer this)"
    )
}

fn only_certificate(text: &str) -> Result<CertificateDer<'static>, String> {
    let mut certs = CertificateDer::pem_slice_iter(text.as_bytes());
    match (certs.next(), certs.next()) {
        (Some(Ok(cert)), None) => Ok(cert),
        (None, _) => Err("it holds no certificate".into()),
        (Some(Err(e)), _) => Err(format!("its certificate is not readable ({e})")),
        (Some(Ok(_)), Some(_)) => Err("it holds more than one certificate".into()),
    }
}

/// Whether `cert` certifies the public half of `key`.
fn issued_for(cert: &CertificateDer<'_>, key: &rcgen::KeyPair) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .is_ok_and(|(_, c)| c.public_key().subject_public_key.data.as_ref() == key.der_bytes())
}

/// A certificate as PEM text, the way rcgen writes the others.
fn to_pem(der: &[u8]) -> String {
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), lf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use time::{Duration, OffsetDateTime};

    /// A hub whose clock runs two hours ahead of this machine's signs a
    /// certificate that starts in the future here: kept (the invite is
    /// spent), not refused as "not usable".
    #[test]
    fn a_certificate_from_a_hub_whose_clock_is_ahead_is_kept() {
        let now = OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.not_before = now - Duration::days(1);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name.push(DnType::CommonName, "cabin");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leaf.not_before = now + Duration::hours(2);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let reply = Reply::Enrolled {
            ep: "cabin".into(),
            cert: cert.pem(),
            ca: ca_cert.pem(),
            token: Secret::new("t"),
            control_port: 1,
            channel_port: 2,
            services: vec![],
        };
        let got = check(reply, &key, ca_cert.der()).expect("kept");
        assert_eq!(got.ep, "cabin");
    }
}
