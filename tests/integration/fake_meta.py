"""A config for the real exporter pointed at the loopback fake Meta (DNS + HTTPS front end)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def fake_meta_config(
    dns_port: int, https_port: int, ca_file: Path, *, interval: str = "200ms"
) -> str:
    """Three services and two control checks, all on loopback, fast intervals for tests."""
    return textwrap.dedent(
        f"""
        builtin_catalog: false
        global:
          interval: {interval}
          timeout: 1s
          recheck_interval: 100ms
          confirm_failures: 2
          latency_threshold: 2s
        dns:
          resolvers: ["127.0.0.1:{dns_port}"]
          timeout: 300ms
        egress:
          allow_networks: ["127.0.0.0/8", "::1/128"]
        tls:
          ca_file: {ca_file}
        services:
          facebook:
            display_name: Facebook
            checks:
              dns:
                kind: dns
                name: facebook.com
                critical: false
              auth_dns:
                kind: dns
                mode: authoritative
                name: facebook.com
                nameservers: ["127.0.0.1:{dns_port}"]
                critical: false
              web:
                kind: http
                url: https://www.facebook.com:{https_port}/
              graph_api:
                kind: http
                url: https://graph.facebook.com:{https_port}/me
                valid_status_codes: [400]
                json_expect: {{error.type: OAuthException, error.code: 2500}}
          instagram:
            display_name: Instagram
            checks:
              web:
                kind: http
                url: https://www.instagram.com:{https_port}/
              tls:
                kind: tls
                host: www.instagram.com
                port: {https_port}
          whatsapp:
            display_name: WhatsApp
            checks:
              chat:
                kind: tcp
                host: www.facebook.com
                port: {https_port}
        control:
          checks:
            resolver:
              kind: dns
              name: example.com
            web:
              kind: http
              url: https://127.0.0.1:{https_port}/
              valid_status_codes: ["<500"]
        """
    )
