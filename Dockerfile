# Latchkey: Node 24 runs the TypeScript sources directly (type stripping); no build step.
FROM node:24-slim

ENV NODE_ENV=production
WORKDIR /app

# Production dependencies only (the `node` dev dependency is not needed: the image has Node 24).
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY src ./src
COPY views ./views
COPY bin ./bin

# The image's unprivileged user; the application files stay owned by root (read-only to it).
USER node

EXPOSE 3000
# Liveness on /healthz (on METRICS_PORT when that is set). The slim image has no curl: Node's fetch.
HEALTHCHECK --interval=15s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.METRICS_PORT || process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# SIGTERM (docker stop) drains in-flight requests for up to 10 s, closes Redis and exits 0.
CMD ["node", "src/main.ts"]
