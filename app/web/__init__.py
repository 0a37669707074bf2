"""The live page (`GET /`): static HTML, JS and CSS served as files, no build step, no CDN."""
