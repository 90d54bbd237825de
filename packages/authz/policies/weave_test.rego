# Unit tests of weave.rego, run with `opa test packages/authz/policies` (the
# interop suite does). Each matcher form and each step of the decision order is
# pinned here; the golden table (golden.yaml) checks the same semantics against
# the local engine.
package weave.authz_test

import rego.v1

import data.weave.authz

pol := {
	"version": 1,
	"id": "unit",
	"default": "deny",
	"rules": [
		{"id": "exact", "effect": "allow", "callers": ["spiffe://td/agent/a"], "callees": ["spiffe://td/agent/b"], "actions": ["call", "call.*"]},
		{"id": "one-seg", "effect": "allow", "callers": ["spiffe://td/w/*"], "actions": ["report"]},
		{"id": "mid-seg", "effect": "allow", "callers": ["spiffe://td/*/worker"], "actions": ["work"]},
		{"id": "deep", "effect": "allow", "callers": ["spiffe://td/batch/**"], "actions": ["ingest"]},
		{"id": "prefix", "effect": "allow", "callers": [{"prefix": "spiffe://td/ops"}], "actions": ["health"]},
		{"id": "domain", "effect": "allow", "callers": ["spiffe://partner"], "actions": ["search"]},
		{"id": "anyone", "effect": "allow", "callers": ["*"], "actions": ["ping"]},
		{"id": "block", "effect": "deny", "callers": ["spiffe://td/w/bad"], "actions": ["*"]},
	],
}

ask(caller, action) := d if {
	d := authz.decision with data.weave.policy as pol
		with input as {"caller": {"spiffe_id": caller}, "action": action, "direction": "inbound"}
}

ask_to(caller, callee, action) := d if {
	d := authz.decision with data.weave.policy as pol
		with input as {"caller": {"spiffe_id": caller}, "callee": {"spiffe_id": callee}, "action": action, "direction": "outbound"}
}

test_exact_caller_and_callee if {
	d := ask_to("spiffe://td/agent/a", "spiffe://td/agent/b", "call")
	d == {"allow": true, "reason": "allowed by rule \"exact\"", "policy_id": "unit", "rule_id": "exact"}
}

test_rule_with_callees_needs_a_callee if {
	ask("spiffe://td/agent/a", "call").allow == false
}

test_callee_must_match if {
	ask_to("spiffe://td/agent/a", "spiffe://td/agent/bb", "call").allow == false
}

test_action_glob_crosses_dots if {
	ask_to("spiffe://td/agent/a", "spiffe://td/agent/b", "call.x.y").rule_id == "exact"
}

test_action_glob_needs_literal_part if {
	ask_to("spiffe://td/agent/a", "spiffe://td/agent/b", "callx").allow == false
}

test_single_segment_wildcard if {
	ask("spiffe://td/w/x", "report").rule_id == "one-seg"
	ask("spiffe://td/w/x/y", "report").allow == false
	ask("spiffe://td/w", "report").allow == false
}

test_wildcard_in_the_middle if {
	ask("spiffe://td/ns1/worker", "work").rule_id == "mid-seg"
	ask("spiffe://td/ns1/a/worker", "work").allow == false
}

test_double_star_one_or_more_segments if {
	ask("spiffe://td/batch/a", "ingest").rule_id == "deep"
	ask("spiffe://td/batch/a/b/c", "ingest").rule_id == "deep"
	ask("spiffe://td/batch", "ingest").allow == false
}

test_prefix_on_segment_boundaries if {
	ask("spiffe://td/ops", "health").rule_id == "prefix"
	ask("spiffe://td/ops/a/b", "health").rule_id == "prefix"
	ask("spiffe://td/opsx", "health").allow == false
}

test_trust_domain_matcher if {
	ask("spiffe://partner/any/path", "search").rule_id == "domain"
	ask("spiffe://partner", "search").rule_id == "domain"
	ask("spiffe://partner.evil/x", "search").allow == false
}

test_deny_overrides_allow_whatever_the_order if {
	d := ask("spiffe://td/w/bad", "report")
	d.allow == false
	d.rule_id == "block"
	d.reason == "denied by rule \"block\""
}

test_star_caller if {
	ask("spiffe://elsewhere/x", "ping").rule_id == "anyone"
}

test_default_deny if {
	d := ask("spiffe://td/agent/a", "nothing")
	d == {"allow": false, "reason": "no rule matched: default deny", "policy_id": "unit"}
}

test_no_policy_is_undefined if {
	not authz.decision with data.weave.policy as null
		with input as {"caller": {"spiffe_id": "spiffe://td/a"}, "action": "ping"}
}

test_default_other_than_deny_is_undefined if {
	not authz.decision with data.weave.policy as object.union(pol, {"default": "allow"})
		with input as {"caller": {"spiffe_id": "spiffe://td/x"}, "action": "ping"}
}
