// A tiny Express app for tests/app_servers.rs: it records which handler ran.
//
// Usage: node express_app.js PORT, with $EXPRESS_MODULE naming the Express to load
// ("express" is Express 5, "express4" is Express 4: both are in package.json) and $APP_LOG the
// file that gets one JSON line per handler run: {"handler", "method", "path", "probe"}, `path`
// being the URL as Express got it and `probe` the request's X-Probe header, which the test sets
// to tell its requests apart. The response body is the same JSON.
//
// Express routes as configured by default: case-insensitive (`/ADMIN` is `/admin`) and not
// strict (`/admin/` is `/admin`). The app also uses `method-override` as its README shows
// (X-HTTP-Method-Override on POST), as many apps do: a proxy in front must never let a client's
// copy of that header reach it.
'use strict';

const fs = require('fs');
const express = require(process.env.EXPRESS_MODULE || 'express');
const methodOverride = require('method-override');

const log = process.env.APP_LOG || '/dev/null';
const port = Number(process.argv[2]);

const app = express();
app.disable('x-powered-by');
app.use(methodOverride());

const ran = (handler) => (req, res) => {
  const entry = {
    handler,
    method: req.method,
    path: req.originalUrl,
    probe: req.get('x-probe') || '',
  };
  fs.appendFileSync(log, JSON.stringify(entry) + '\n');
  res.json(entry);
};

// `app.use` mounts on a path prefix (segment by segment), the same in Express 4 and 5.
app.use('/admin', ran('admin'));
app.use('/files', ran('files'));
app.use('/public', ran('public'));
app.all('/', ran('root'));
app.use((req, res) => res.status(404).json({ handler: null }));

app.listen(port, '127.0.0.1');
