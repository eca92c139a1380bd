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
    crate::tls::verify_client_cert(ca_der, &cert).map_err(|e| {
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
