// The tutorial's index.js (Express on Node's https, client certificate
// required and verified, log4js system and access logs), adapted for
// `make bench`: the port, the certificate files and the number of workers come
// from the environment. With WORKERS > 1 Node's cluster module forks that many
// workers that share the listening socket, the usual way to use every core.
//
//   PORT=8443 CERT=server.crt KEY=server.key CA=clientca.crt WORKERS=1 node server.js
const cluster = require('cluster');
const express = require('express');
const https = require('https');
const fs = require('fs');
const log4js = require('log4js');

const port = Number(process.env.PORT || 8443);
const workers = Number(process.env.WORKERS || 1);
const logDir = process.env.LOG_DIR || '.';

log4js.configure({
  appenders: {
    system: { type: 'file', filename: `${logDir}/system.log` },
    access: { type: 'file', filename: `${logDir}/access.log` },
  },
  categories: {
    default: { appenders: ['system'], level: 'debug' },
    access: { appenders: ['access'], level: 'info' },
  },
});
const systemLogger = log4js.getLogger();

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', () => process.exit(1));
} else {
  const options = {
    cert: fs.readFileSync(process.env.CERT || 'server.crt'),
    key: fs.readFileSync(process.env.KEY || 'server.key'),
    ca: fs.readFileSync(process.env.CA || 'clientca.crt'),
    rejectUnauthorized: true,
    requestCert: true,
  };
  const accessLogger = log4js.getLogger('access');
  const app = express();
  app.use(log4js.connectLogger(accessLogger));
  app.get('/test', (req, res) => {
    res.status(200).json({ message: 'Hello mtls' });
  });
  https.createServer(options, app).listen(port, '127.0.0.1', () => {
    console.log(`HTTPS listening on ${port}....`);
    systemLogger.info('HTTPS start');
  });
}
