# Weave authorization policy for OPA: the same semantics as @weave/authz's
# LocalPolicyEnforcer, reading a Weave policy document (the YAML/JSON format
# described in the package README) from data.weave.policy.
#
# Load it:
#   PUT /v1/policies/weave-authz      (this file)
#   PUT /v1/data/weave/policy         (the policy document as JSON)
# Ask it (what OpaEnforcer does by default):
#   POST /v1/data/weave/authz/decision  {"input": {caller, callee?, action, direction, context}}
#
# The answer is {allow, reason, policy_id, rule_id?}. With no policy document
# loaded (or one whose default is not "deny") the decision is undefined, which
# OpaEnforcer turns into a deny with its own reason.
package weave.authz

import rego.v1

policy := data.weave.policy

# Indexes (file order) of the rules whose callers, callees and actions all match.
matched contains i if {
	some i, rule in policy.rules
	caller_ok(rule)
	callee_ok(rule)
	action_ok(rule)
}

deny_matches := sort([i | some i in matched; policy.rules[i].effect == "deny"])

allow_matches := sort([i | some i in matched; policy.rules[i].effect == "allow"])

# Deny overrides allow; the earliest rule of the winning effect decides.
decision := d if {
	policy["default"] == "deny"
	count(deny_matches) > 0
	rule := policy.rules[deny_matches[0]]
	d := {"allow": false, "reason": sprintf("denied by rule %q", [rule.id]), "policy_id": policy.id, "rule_id": rule.id}
} else := d if {
	policy["default"] == "deny"
	count(allow_matches) > 0
	rule := policy.rules[allow_matches[0]]
	d := {"allow": true, "reason": sprintf("allowed by rule %q", [rule.id]), "policy_id": policy.id, "rule_id": rule.id}
} else := d if {
	policy["default"] == "deny"
	d := {"allow": false, "reason": "no rule matched: default deny", "policy_id": policy.id}
}

caller_ok(rule) if {
	some m in rule.callers
	id_match(m, input.caller.spiffe_id)
}

# A rule without callees matches any callee, and checks that name none.
callee_ok(rule) if not rule.callees

# A rule with callees matches only when the check names a callee that matches.
callee_ok(rule) if {
	some m in rule.callees
	id_match(m, input.callee.spiffe_id)
}

# Action patterns: "*" stands for any characters (dots included).
action_ok(rule) if {
	some p in rule.actions
	glob.match(p, null, input.action)
}

# "*": any verified caller.
id_match(m, _) if m == "*"

# {"prefix": "spiffe://td/a"}: the ID itself and everything below it.
id_match(m, id) if {
	is_object(m)
	id == m.prefix
}

id_match(m, id) if {
	is_object(m)
	startswith(id, concat("", [m.prefix, "/"]))
}

# "spiffe://td": every ID of the trust domain (split gives ["spiffe:", "", "td"]).
id_match(m, id) if {
	is_string(m)
	count(split(m, "/")) == 3
	id == m
}

id_match(m, id) if {
	is_string(m)
	count(split(m, "/")) == 3
	startswith(id, concat("", [m, "/"]))
}

# "spiffe://td/a/b": exactly that ID.
id_match(m, id) if {
	is_string(m)
	count(split(m, "/")) > 3
	not contains(m, "*")
	id == m
}

# "spiffe://td/a/*": "*" is exactly one segment.
id_match(m, id) if {
	is_string(m)
	count(split(m, "/")) > 3
	contains(m, "*")
	not endswith(m, "/**")
	mp := split(m, "/")
	ip := split(id, "/")
	count(mp) == count(ip)
	every i, seg in mp {
		seg_match(seg, ip[i])
	}
}

# "spiffe://td/a/**": one or more further segments.
id_match(m, id) if {
	is_string(m)
	endswith(m, "/**")
	parts := split(m, "/")
	mp := array.slice(parts, 0, count(parts) - 1)
	ip := split(id, "/")
	count(ip) > count(mp)
	every i, seg in mp {
		seg_match(seg, ip[i])
	}
}

seg_match(s, _) if s == "*"

seg_match(s, t) if s == t
