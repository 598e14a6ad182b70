/*
 * netpolicy.h
 *		What pg_callback may connect to: URL, header and address checks
 *		(SSRF protection), shared by endpoint validation and delivery.
 */
#ifndef PGCB_NETPOLICY_H
#define PGCB_NETPOLICY_H

#include <curl/curl.h>

#include "utils/jsonb.h"

#define PGCB_NETPOLICY_WHY_LEN	320

/* GUC check: is list a comma-separated list of CIDR blocks?  *bad gets the bad item. */
extern bool pgcb_netpolicy_allowlist_is_valid(const char *list, char **bad);

/*
 * May we connect to this resolved address?  Every block of the IANA
 * special-purpose registries that is not globally reachable (loopback,
 * RFC 1918, link-local with 169.254.169.254, CGNAT, documentation,
 * benchmarking, ULA, Teredo, local-use NAT64 ...), multicast, broadcast,
 * reserved space, IPv6 outside 2000::/3, and IPv6 forms that carry any
 * refused IPv4 address (mapped, SIIT, compatible, NAT64, 6to4) are refused
 * unless callback.ssrf_allowlist admits them.  On refusal, why gets a message.
 */
extern bool pgcb_netpolicy_address_allowed(const struct sockaddr *addr,
										   char *why, size_t whylen);

/*
 * The URL as messages, logs and views may show it (palloc'd): userinfo,
 * query and fragment replaced by three stars, the path too unless keep_path.
 * Every message that repeats a URL shows this form.
 */
extern char *pgcb_netpolicy_redact_url(const char *url, bool keep_path);

/*
 * ereport(ERROR) with SQLSTATE and hint unless url is notify:<channel>
 * (notify_target.c), an amqp or amqps URL that pgcb_amqp_check_url accepts,
 * or an absolute http or https URL with a host, no user:password, and (when the host is an address
 * in any spelling inet_aton or inet_pton accepts: 2130706433, 0x7f.1, 127.1,
 * [::1] ...) an address that pgcb_netpolicy_address_allowed admits.
 */
extern void pgcb_netpolicy_check_url(const char *url);

/*
 * ereport(ERROR) (42501) when host (a name, an address in any spelling,
 * bracketed or not) is an address pgcb_netpolicy_address_allowed refuses;
 * messages show the URL as shown.
 */
extern void pgcb_netpolicy_check_host(const char *host, const char *shown);

/*
 * ereport(ERROR) unless headers is a JSON object whose values are strings,
 * whose names are HTTP tokens, whose values hold no CR, LF or NUL, and which
 * does not set a header pg_callback owns (webhook-*, content-type,
 * content-length, host, transfer-encoding, connection).
 */
extern void pgcb_netpolicy_check_headers(Jsonb *headers);

/* CURLOPT_PREREQFUNCTION: the same check on every request, kept-alive connections too. */
extern int	pgcb_netpolicy_prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip,
								  int conn_primary_port, int conn_local_port);

/*
 * CURLOPT_OPENSOCKETFUNCTION: checks the address curl is about to connect to
 * (after DNS, so rebinding cannot slip through).  clientp must point to a
 * char[PGCB_NETPOLICY_WHY_LEN] that receives the reason on refusal.
 */
extern curl_socket_t pgcb_netpolicy_opensocket(void *clientp, curlsocktype purpose,
											   struct curl_sockaddr *address);

#endif							/* PGCB_NETPOLICY_H */
