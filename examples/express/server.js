// The tutorial's Express app, without TLS: `mtls serve --upstream
// http://127.0.0.1:3000` does the TLS and the client certificate, and passes
// each request here with the verified identity in headers (see the README,
// "Your application behind mtls"). The app listens on 127.0.0.1 only: nothing
// but mtls may reach it, or anyone could send those headers themselves.
//
//   npm ci && node server.js        (PORT=3000 by default; PORT=0: any free port)
const crypto = require('crypto');
const express = require('express');

const port = Number(process.env.PORT || 3000);
const app = express();

// The tutorial's route, unchanged.
app.get('/test', (req, res) => {
  res.status(200).json({ message: 'Hello mtls' });
});

// RFC 9440: Client-Cert is the DER certificate as a structured-field byte
// sequence, ":BASE64:". Node parses it into a certificate object.
function clientCert(req) {
  const value = req.get('Client-Cert');
  const m = value && /^:([A-Za-z0-9+/=]+):$/.exec(value.trim());
  return m ? new crypto.X509Certificate(Buffer.from(m[1], 'base64')) : null;
}

// Who is calling: the plain headers for the simple cases, the certificate
// itself for anything else (its SANs, its key).
// (`/me`, not `/whoami`: mtls answers GET /test and /whoami itself unless a
// route of its configuration file sends them here, as mtls.yaml does for /test.)
app.get('/me', (req, res) => {
  const cert = clientCert(req);
  res.status(200).json({
    verify: req.get('X-Client-Verify') || null,
    subject: req.get('X-Client-Subject') || null,
    issuer: req.get('X-Client-Issuer') || null,
    serial: req.get('X-Client-Serial') || null,
    xfcc: req.get('X-Forwarded-Client-Cert') || null,
    cert: cert && {
      subject: cert.subject,
      issuer: cert.issuer,
      serialNumber: cert.serialNumber,
      fingerprint256: cert.fingerprint256,
      subjectAltName: cert.subjectAltName || null,
      validTo: cert.validTo,
    },
  });
});

// An authorization decision of the app's own, on the verified identity.
app.get('/admin', (req, res) => {
  const subject = req.get('X-Client-Subject') || '';
  if (!/(^|,)CN=admin(,|$)/.test(subject)) {
    res.status(403).json({ error: 'forbidden', reason: `${subject || 'nobody'} is not an admin` });
    return;
  }
  res.status(200).json({ message: 'Hello admin' });
});

const server = app.listen(port, '127.0.0.1', () => {
  console.log(`Express listening on 127.0.0.1:${server.address().port}`);
});
