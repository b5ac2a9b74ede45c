// The OIDC identity provider of the tests and the demo: panva's oidc-provider, configured for the
// client-credentials grant only, issuing RS256 JWT access tokens for one audience (the brokers
// behind the interceptor).
//
//     node server.mjs CONFIG.json
//
// CONFIG.json (written by tests/src/idp.rs):
//   port, host, issuer          where to listen, and the `iss` of every token
//   audience                    the `aud` of every token
//   resource                    optional resource indicator (absolute URI) clients may send;
//                               default `urn:kafka:<audience>`. Clients that send none get it.
//   keys                        optional private JWKS ({ "keys": [...] })
//   generate_keys               optional kids of fresh RSA-2048 keys, placed before `keys`
//   keys_out                    optional file that receives the resulting private JWKS
//   install_dir                 where `npm ci` put node_modules (default: next to this file)
//   clients                     [{ client_id, client_secret, groups, access_token_ttl, scope }]
//
// The first key signs; every key is published at /jwks, so a restart with [new, old] and then
// [new] is a key rotation as a relying party sees it. Prints `idp ready <issuer>` once listening.

import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// The package is installed under .peers/idp, not next to this file (which stays in the source
// tree), and ESM ignores NODE_PATH: resolve it from the install dir by hand.
const installDir = config.install_dir ?? dirname(fileURLToPath(import.meta.url));
const entry = createRequire(join(installDir, 'package.json')).resolve('oidc-provider');
const { default: Provider, errors } = await import(pathToFileURL(entry).href);

const keys = [
  ...(config.generate_keys ?? []).map((kid) => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  }),
  ...(config.keys?.keys ?? []),
];
if (keys.length === 0) throw new Error('no signing keys: give keys or generate_keys');
if (config.keys_out) {
  // Written whole or not at all: the harness reads it back to rotate.
  writeFileSync(`${config.keys_out}.part`, JSON.stringify({ keys }, null, 2), { mode: 0o600 });
  renameSync(`${config.keys_out}.part`, config.keys_out);
}
const signingKid = keys[0].kid;

const { audience } = config;
const resource = config.resource ?? `urn:kafka:${audience}`;
const byId = new Map(config.clients.map((c) => [c.client_id, c]));
const ttlOf = (clientId) => byId.get(clientId)?.access_token_ttl ?? 300;
const scopes = new Set(['openid', ...config.clients.map((c) => c.scope ?? 'kafka')]);

const provider = new Provider(config.issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    // The provider accepts a client secret both ways whatever this says; librdkafka and the
    // Python clients use HTTP basic, the Rust harness can do either.
    token_endpoint_auth_method: 'client_secret_basic',
    scope: c.scope ?? 'kafka',
  })),
  jwks: { keys },
  scopes: [...scopes],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Clients (librdkafka among them) send no `resource`: without a default the provider
      // would issue an opaque token with no audience.
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator, client) => {
        if (indicator !== resource && indicator !== audience) {
          throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        }
        return {
          scope: [...scopes].filter((s) => s !== 'openid').join(' '),
          audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ttlOf(client.clientId),
          // Pin the kid: with several RSA keys the provider's own choice is not documented.
          jwt: { sign: { alg: 'RS256', kid: signingKid } },
        };
      },
    },
  },
  ttl: {
    ClientCredentials: (_ctx, _token, client) => ttlOf(client.clientId),
  },
  extraTokenClaims: (_ctx, token) => ({ groups: byId.get(token.clientId)?.groups ?? [] }),
  formats: {
    customizers: {
      // A client that asks for no scope gets the scope it is registered with (as Keycloak and
      // Okta do), so every token has a `scope` claim whatever the Kafka client sends.
      jwt: (_ctx, token, jwt) => {
        if (!jwt.payload.scope) jwt.payload.scope = byId.get(token.clientId)?.scope ?? 'kafka';
      },
    },
  },
  // Not needed for the client-credentials grant; set so the provider does not warn at start.
  cookies: { keys: ['interceptor-test-idp'] },
  clientBasedCORS: () => false,
});

// One line per token request, for the test logs.
provider.on('grant.success', (ctx) => {
  console.log(`token issued client=${ctx.oidc.client?.clientId} kid=${signingKid}`);
});
provider.on('grant.error', (ctx, err) => {
  console.log(`token refused client=${ctx.oidc.client?.clientId ?? '?'}: ${err.message} ${err.error_description ?? ''}`);
});
provider.on('server_error', (_ctx, err) => console.error('server error', err));

// The harness stops the provider with SIGTERM: exit at once and cleanly (keep-alive
// connections would hold a graceful close open).
process.on('SIGTERM', () => process.exit(0));

provider.listen(config.port, config.host, () => {
  console.log(`idp ready ${config.issuer} kids=${keys.map((k) => k.kid).join(',')} signing=${signingKid}`);
});
