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
	not authz.decision with input as {"caller": {"spiffe_id": "spiffe://td/a"}, "action": "ping"}
}

# --- Documents the local loader refuses. Each one below would otherwise let
# the caller in: its deny rule (or an allow's callees) would be skipped and the
# allow for the whole trust domain would decide.

block := {"id": "block", "effect": "deny", "callers": ["spiffe://td/agent/a"], "actions": ["*"]}

everyone := {"id": "everyone", "effect": "allow", "callers": ["spiffe://td"], "actions": ["*"]}

doc_with(rules) := {"version": 1, "id": "v", "default": "deny", "rules": rules}

# The block rule changed by `patch`, then the allow for everyone.
patched(patch) := doc_with([object.union(block, patch), everyone])

with_caller(m) := patched({"callers": [m]})

decide(doc) := d if {
	d := authz.decision with data.weave.policy as doc
		with input as {"caller": {"spiffe_id": "spiffe://td/agent/a"}, "callee": {"spiffe_id": "spiffe://td/agent/b"}, "action": "call", "direction": "outbound"}
}

# Denied, naming the problem, and no policy or rule: nothing in it decided.
invalid(doc, why) if {
	d := decide(doc)
	d.allow == false
	d.reason == concat("", ["policy invalid: ", why])
	object.keys(d) == {"allow", "reason"}
}

valid(doc) if decide(doc).policy_id == doc.id

repeat(s, n) := concat("", [s | some _ in numbers.range(1, n)])

test_the_unpatched_document_denies_by_rule if {
	decide(patched({})) == {"allow": false, "reason": "denied by rule \"block\"", "policy_id": "v", "rule_id": "block"}
	decide(doc_with([everyone])).allow == true
}

test_effect_other_than_allow_or_deny if {
	invalid(patched({"effect": "Deny"}), `rules[0].effect: effect must be "allow" or "deny"`)
	invalid(patched({"effect": true}), `rules[0].effect: effect must be "allow" or "deny"`)
}

test_uppercase_trust_domain if {
	invalid(
		with_caller("spiffe://TD/agent/a"),
		`rules[0].callers[0]: invalid SPIFFE ID "spiffe://TD/agent/a": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
	)
}

test_prefix_with_trailing_slash if {
	invalid(
		with_caller({"prefix": "spiffe://td/agent/"}),
		`rules[0].callers[0]: invalid SPIFFE ID in prefix "spiffe://td/agent/": path cannot have a trailing slash`,
	)
}

test_callers_not_a_list if {
	invalid(patched({"callers": "spiffe://td/agent/a"}), "rules[0].callers: callers must be a list of matchers")
	invalid(patched({"callers": []}), "rules[0].callers: callers cannot be empty")
}

test_misspelt_callees_key if {
	only_b := {"id": "to-b-only", "effect": "allow", "callers": ["spiffe://td/agent/a"], "callee": ["spiffe://td/agent/c"], "actions": ["*"]}
	invalid(doc_with([only_b]), `rules[0].callee: unknown key "callee"`)
}

test_callees_not_a_list_or_empty if {
	invalid(patched({"callees": null}), "rules[0].callees: callees must be a list of matchers")
	invalid(patched({"callees": false}), "rules[0].callees: callees must be a list of matchers")
	invalid(patched({"callees": []}), "rules[0].callees: callees cannot be empty")
	invalid(patched({"callees": ["spiffe://td/b/"]}), `rules[0].callees[0]: invalid SPIFFE ID "spiffe://td/b/": path cannot have a trailing slash`)
}

test_exact_id_syntax if {
	invalid(with_caller(""), `rules[0].callers[0]: invalid SPIFFE ID "": cannot be empty`)
	invalid(with_caller("td/agent/a"), `rules[0].callers[0]: invalid SPIFFE ID "td/agent/a": scheme is missing or invalid`)
	invalid(with_caller("SPIFFE://td/a"), `rules[0].callers[0]: invalid SPIFFE ID "SPIFFE://td/a": scheme is missing or invalid`)
	invalid(with_caller("spiffe:///a"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe:///a": trust domain is missing`)
	invalid(with_caller("spiffe://td:8443/a"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td:8443/a": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`)
	invalid(with_caller("spiffe://td/a//b"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/a//b": path cannot contain empty segments`)
	invalid(with_caller("spiffe://td/"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/": path cannot have a trailing slash`)
	invalid(with_caller("spiffe://td/a/./b"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/a/./b": path cannot contain dot segments`)
	invalid(with_caller("spiffe://td/a/.."), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/a/..": path cannot contain dot segments`)
	invalid(with_caller("spiffe://td/a b"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/a b": path segment characters are limited to letters, numbers, dots, dashes, and underscores`)
	invalid(with_caller("spiffe://td/a?x=1"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/a?x=1": path segment characters are limited to letters, numbers, dots, dashes, and underscores`)
	invalid(with_caller("spiffe://td/é"), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/é": path segment characters are limited to letters, numbers, dots, dashes, and underscores`)
}

test_exact_id_length_bound if {
	valid(with_caller(concat("", ["spiffe://td/", repeat("a", 2036)])))
	long := concat("", ["spiffe://td/", repeat("a", 2037)])
	d := decide(with_caller(long))
	d.allow == false
	startswith(d.reason, `policy invalid: rules[0].callers[0]: invalid SPIFFE ID "spiffe://td/aaa`)
	endswith(d.reason, "…")
	count(d.reason) <= 401
}

test_glob_syntax if {
	invalid(with_caller("td/*"), `rules[0].callers[0]: invalid SPIFFE ID glob "td/*": scheme is missing or invalid`)
	invalid(with_caller("spiffe://*.td/a"), "rules[0].callers[0]: wildcards are not allowed in the trust domain")
	invalid(with_caller("spiffe://td/a*"), `rules[0].callers[0]: segment "a*": "*" and "**" must be whole path segments`)
	invalid(with_caller("spiffe://td/***"), `rules[0].callers[0]: segment "***": "*" and "**" must be whole path segments`)
	invalid(with_caller("spiffe://td/**/a"), `rules[0].callers[0]: "**" is only allowed as the last path segment`)
	invalid(with_caller("spiffe://td/*/"), `rules[0].callers[0]: invalid SPIFFE ID glob "spiffe://td/*/": path cannot have a trailing slash`)
	invalid(with_caller("spiffe://TD/*"), `rules[0].callers[0]: invalid SPIFFE ID glob "spiffe://TD/*": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`)
	invalid(with_caller("spiffe://td/../*"), `rules[0].callers[0]: invalid SPIFFE ID glob "spiffe://td/../*": path cannot contain dot segments`)
}

test_glob_length_bound_counts_wildcards_as_one_character if {
	valid(with_caller(concat("", ["spiffe://td/", repeat("a", 2034), "/**"])))
	d := decide(with_caller(concat("", ["spiffe://td/", repeat("a", 2035), "/**"])))
	d.allow == false
	startswith(d.reason, `policy invalid: rules[0].callers[0]: invalid SPIFFE ID glob "spiffe://td/aaa`)
}

test_prefix_matcher_syntax if {
	invalid(with_caller({"prefix": "spiffe://td"}), `rules[0].callers[0]: prefix "spiffe://td" has no path; write "spiffe://td" to match the whole trust domain`)
	invalid(with_caller({"prefix": "spiffe://td/a/*"}), `rules[0].callers[0]: invalid SPIFFE ID in prefix "spiffe://td/a/*": path segment characters are limited to letters, numbers, dots, dashes, and underscores`)
	shape := `rules[0].callers[0]: a matcher is a string ("*", "spiffe://td", "spiffe://td/path", a glob) or { prefix: "spiffe://td/path" }`
	invalid(with_caller({"prefix": "spiffe://td/a", "exact": true}), shape)
	invalid(with_caller({"prefix": 1}), shape)
	invalid(with_caller({}), shape)
	invalid(with_caller(7), shape)
	invalid(with_caller(null), shape)
	invalid(with_caller(["spiffe://td/agent/a"]), shape)
}

test_actions if {
	invalid(patched({"actions": "*"}), "rules[0].actions: actions must be a list of action patterns")
	invalid(patched({"actions": []}), "rules[0].actions: actions cannot be empty")
	invalid(patched({"actions": [1]}), "rules[0].actions[0]: an action pattern must be a string")
	invalid(patched({"actions": ["call", ""]}), "rules[0].actions[1]: action pattern cannot be empty")
	invalid(patched({"actions": [repeat("a", 257)]}), "rules[0].actions[0]: action pattern is longer than 256 characters")
	chars := `action patterns may contain letters, digits, ". _ : / -" and "*" (any characters) only`
	invalid(patched({"actions": ["call?"]}), concat("", ["rules[0].actions[0]: ", chars]))
	invalid(patched({"actions": ["[a-z]*"]}), concat("", ["rules[0].actions[0]: ", chars]))
	invalid(patched({"actions": ["{call,ping}"]}), concat("", ["rules[0].actions[0]: ", chars]))
	invalid(patched({"actions": ["call\\*"]}), concat("", ["rules[0].actions[0]: ", chars]))
}

test_rule_keys if {
	invalid(patched({"note": "x"}), `rules[0].note: unknown key "note"`)
	invalid(doc_with([object.remove(block, ["effect"]), everyone]), `rules[0].effect: missing required key "effect"`)
	invalid(doc_with([object.remove(block, ["actions"]), everyone]), `rules[0].actions: missing required key "actions"`)
	invalid(doc_with([object.remove(block, ["callers"]), everyone]), `rules[0].callers: missing required key "callers"`)
	invalid(doc_with([object.remove(block, ["id"]), everyone]), `rules[0].id: missing required key "id"`)
	invalid(patched({"description": 3}), "rules[0].description: description must be a string")
	invalid(doc_with(["block", everyone]), "rules[0]: a rule must be an object")
}

test_rule_ids if {
	invalid(patched({"id": 1}), "rules[0].id: rule id must be a string")
	invalid(patched({"id": "-x"}), `rules[0].id: rule id may contain letters, digits and ". _ : -", starting with a letter or digit`)
	invalid(patched({"id": repeat("a", 129)}), "rules[0].id: rule id is longer than 128 characters")
	invalid(doc_with([block, object.union(everyone, {"id": "block"})]), `rules[1].id: duplicate rule id "block" (first used by rules[0])`)
}

test_document_keys if {
	invalid(object.union(patched({}), {"defaults": "deny"}), `defaults: unknown key "defaults"`)
	invalid(object.union(patched({}), {"default": "allow"}), `default: default must be "deny": Weave has no default that allows`)
	invalid(object.remove(patched({}), ["default"]), `default: missing required key "default"`)
	invalid(object.remove(patched({}), ["version"]), `version: missing required key "version"`)
	invalid(object.union(patched({}), {"version": "1"}), "version: version must be 1")
	invalid(object.union(patched({}), {"version": 2}), "version: version must be 1")
	invalid(object.union(patched({}), {"id": "a b"}), `id: policy id may contain letters, digits and ". _ : -", starting with a letter or digit`)
	invalid(object.union(patched({}), {"description": ["x"]}), "description: description must be a string")
	invalid(object.union(patched({}), {"rules": {"0": block}}), "rules: rules must be a list")
	invalid(object.remove(patched({}), ["rules"]), `rules: missing required key "rules"`)
	invalid(null, "the policy document is empty")
	invalid([patched({})], "the policy document must be an object")
	invalid("version: 1", "the policy document must be an object")
}

test_first_problem_by_key_path_and_how_many_more if {
	invalid(patched({"effect": "Deny", "callers": ["spiffe://TD/a"]}), `rules[0].callers[0]: invalid SPIFFE ID "spiffe://TD/a": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores (and 1 more problem)`)
	invalid(doc_with([object.union(block, {"effect": "x"}), object.union(everyone, {"effect": "x"}), object.union(everyone, {"id": "e2", "effect": "x"})]), `rules[0].effect: effect must be "allow" or "deny" (and 2 more problems)`)
}

test_valid_edge_cases_still_decide if {
	valid(with_caller("spiffe://td/**"))
	valid(with_caller("spiffe://td/*/x/*"))
	valid(with_caller("spiffe://a-b_c.9/A_b-C.9/.../.a/a..b/..."))
	valid(with_caller({"prefix": "spiffe://td/a.b"}))
	valid(patched({"actions": ["a:b/c-d_e.f", "*", "a*b*", repeat("a", 256)], "description": "why", "callees": ["*"]}))
	valid(patched({"id": concat("", ["A1._:-", repeat("z", 122)])}))
	valid(object.union(patched({}), {"description": "the policy", "version": 1.0}))
	decide(doc_with([])) == {"allow": false, "reason": "no rule matched: default deny", "policy_id": "v"}
}
