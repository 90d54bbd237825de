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
# loaded the decision is undefined, which OpaEnforcer turns into a deny with its
# own reason. A document the local engine would refuse to load decides nothing:
# every answer is {allow: false, reason: "policy invalid: <first problem>"}.
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

# An invalid document denies everything: OPA would otherwise skip what it
# cannot read (an effect "Deny", a misspelt key, a malformed matcher), which
# turns deny rules into no-ops and widens allow rules. Deny overrides allow;
# the earliest rule of the winning effect decides.
decision := d if {
	loaded
	not valid_document
	d := {"allow": false, "reason": invalid_reason}
} else := d if {
	valid_document
	count(deny_matches) > 0
	rule := policy.rules[deny_matches[0]]
	d := {"allow": false, "reason": sprintf("denied by rule %q", [rule.id]), "policy_id": policy.id, "rule_id": rule.id}
} else := d if {
	valid_document
	count(allow_matches) > 0
	rule := policy.rules[allow_matches[0]]
	d := {"allow": true, "reason": sprintf("allowed by rule %q", [rule.id]), "policy_id": policy.id, "rule_id": rule.id}
} else := d if {
	valid_document
	d := {"allow": false, "reason": "no rule matched: default deny", "policy_id": policy.id}
}

# Unifies with any value, null and false included: only an absent document is "not loaded".
loaded if _ = policy

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

# --- Validation: the checks of @weave/authz's policy loader (src/policy.ts,
# src/matchers.ts, SpiffeId.parse in @weave/identity). valid_document states
# validity positively, so a check that cannot be evaluated (a value of the
# wrong type) counts as invalid; `problems` only explains it. Not reproduced:
# what is lost when OPA turns YAML into data (duplicate keys, merge keys,
# aliases, tags), which OPA's own loader decides. As in the local engine, an
# empty rules list is valid: it denies everything by default.

doc_keys := {"version", "id", "default", "description", "rules"}

doc_required := ["version", "id", "default", "rules"]

rule_keys := {"id", "effect", "callers", "callees", "actions", "description"}

rule_required := ["id", "effect", "callers", "actions"]

name_re := `^[A-Za-z0-9][A-Za-z0-9._:-]*$`

# A path segment: SPIFFE's characters, but not "." or "..".
segment_re := `(?:\.{0,2}[A-Za-z0-9_-][A-Za-z0-9._-]*|\.{3,}[A-Za-z0-9._-]*)`

# Only ASCII passes this and matcher_re, so count() (characters) is also the
# byte length go-spiffe bounds.
id_re := concat("", [`^spiffe://[a-z0-9._-]+(?:/`, segment_re, `)*$`])

# A string matcher: "*", or a SPIFFE ID whose segments may also be "*", and
# whose last may be "**" (never in the trust domain). Without a "*" this is
# exactly id_re.
matcher_re := concat("", [`^(?:\*|spiffe://[a-z0-9._-]+(?:/(?:`, segment_re, `|\*))*(?:/\*\*)?)$`])

# No glob syntax beyond "*", so glob.match means what the local engine means.
action_re := `^[A-Za-z0-9._:/-]*(?:\*[A-Za-z0-9._:/-]*)*$`

valid_document if {
	is_object(policy)
	count(object.keys(policy) - doc_keys) == 0
	policy.version == 1
	valid_name(policy.id)
	policy["default"] == "deny"
	is_string(object.get(policy, "description", ""))
	is_array(policy.rules)
	every rule in policy.rules {
		valid_rule(rule)
	}
	count(rule_ids) == count(policy.rules)
}

rule_ids := {r.id | some r in policy.rules}

valid_rule(rule) if {
	is_object(rule)
	count(object.keys(rule) - rule_keys) == 0
	valid_name(rule.id)
	rule.effect in {"allow", "deny"}
	is_string(object.get(rule, "description", ""))
	is_array(rule.callers)
	count(rule.callers) > 0
	every m in rule.callers {
		valid_matcher(m)
	}

	# Absent callees pass (as "*" would); present ones must be a non-empty list.
	callees := object.get(rule, "callees", ["*"])
	is_array(callees)
	count(callees) > 0
	every m in callees {
		valid_matcher(m)
	}
	is_array(rule.actions)
	count(rule.actions) > 0
	every p in rule.actions {
		valid_action(p)
	}
}

valid_matcher(m) if {
	is_string(m)
	regex.match(matcher_re, m)

	# The local engine bounds a glob by the ID it validates it as, where "*"
	# and a final "**" each stand for one character.
	count(replace(m, "**", "*")) <= 2048
}

valid_matcher(m) if {
	is_object(m)
	object.keys(m) == {"prefix"}
	valid_id(m.prefix)
	count(split(m.prefix, "/")) > 3
}

valid_id(s) if {
	is_string(s)
	count(s) <= 2048
	regex.match(id_re, s)
}

valid_action(p) if {
	is_string(p)
	count(p) > 0
	count(p) <= 256
	regex.match(action_re, p)
}

valid_name(s) if {
	is_string(s)
	count(s) <= 128
	regex.match(name_re, s)
}

optional_string(obj, key) if is_string(object.get(obj, key, ""))

# A present key unifies whatever its value, null and false included.
has_key(obj, key) if _ = obj[key]

# --- Problems: [key path, message], in the local loader's words where it has them.

# The first problem by key path, and how many more there are. The reason is
# kept short: OpaEnforcer refuses a reason over 1024 characters.
invalid_reason := r if {
	ps := sort(problems)
	count(ps) > 0
	first := clip(sprintf("policy invalid: %s", [describe(ps[0])]), 400)
	r := with_more(first, count(ps) - 1)
} else := "policy invalid"

describe([path, msg]) := msg if {
	count(path) == 0
}

else := sprintf("%s: %s", [key_path(path), msg])

key_path(path) := concat("", [part |
	some i, k in path
	part := key_part(i, k)
])

key_part(i, k) := sprintf("[%d]", [k]) if {
	is_number(k)
}

else := k if {
	i == 0
}

else := sprintf(".%s", [k])

with_more(s, 0) := s

with_more(s, 1) := sprintf("%s (and 1 more problem)", [s])

with_more(s, n) := sprintf("%s (and %d more problems)", [s, n]) if {
	n > 1
}

clip(s, n) := s if {
	count(s) <= n
}

else := concat("", [substring(s, 0, n), "…"])

problems contains [[], "the policy document is empty"] if policy == null

problems contains [[], "the policy document must be an object"] if {
	policy != null
	not is_object(policy)
}

problems contains [[k], sprintf("unknown key %q", [k])] if {
	is_object(policy)
	some k in object.keys(policy)
	not k in doc_keys
}

problems contains [[k], sprintf("missing required key %q", [k])] if {
	is_object(policy)
	some k in doc_required
	not has_key(policy, k)
}

problems contains [["version"], "version must be 1"] if {
	has_key(policy, "version")
	not policy.version == 1
}

problems contains [["id"], msg] if {
	has_key(policy, "id")
	not valid_name(policy.id)
	msg := name_problem("policy id", policy.id)
}

problems contains [["default"], `default must be "deny": Weave has no default that allows`] if {
	has_key(policy, "default")
	not policy["default"] == "deny"
}

problems contains [["description"], "description must be a string"] if {
	is_object(policy)
	not optional_string(policy, "description")
}

problems contains [["rules"], "rules must be a list"] if {
	has_key(policy, "rules")
	not is_array(policy.rules)
}

problems contains [["rules", i], "a rule must be an object"] if {
	some i, rule in rules_list
	not is_object(rule)
}

problems contains [["rules", i, k], sprintf("unknown key %q", [k])] if {
	some i, rule in rule_objects
	some k in object.keys(rule)
	not k in rule_keys
}

problems contains [["rules", i, k], sprintf("missing required key %q", [k])] if {
	some i, rule in rule_objects
	some k in rule_required
	not has_key(rule, k)
}

problems contains [["rules", i, "id"], msg] if {
	some i, rule in rule_objects
	has_key(rule, "id")
	not valid_name(rule.id)
	msg := name_problem("rule id", rule.id)
}

problems contains [["rules", i, "effect"], `effect must be "allow" or "deny"`] if {
	some i, rule in rule_objects
	has_key(rule, "effect")
	not rule.effect in {"allow", "deny"}
}

problems contains [["rules", i, "description"], "description must be a string"] if {
	some i, rule in rule_objects
	not optional_string(rule, "description")
}

problems contains [["rules", i, key], sprintf("%s must be a list of matchers", [key])] if {
	some i, rule in rule_objects
	some key in ["callers", "callees"]
	has_key(rule, key)
	not is_array(rule[key])
}

problems contains [["rules", i, key], sprintf("%s cannot be empty", [key])] if {
	some i, rule in rule_objects
	some key in ["callers", "callees"]
	rule[key] == []
}

problems contains [["rules", i, key, j], msg] if {
	some i, rule in rule_objects
	some key in ["callers", "callees"]
	is_array(rule[key])
	some j, m in rule[key]
	not valid_matcher(m)
	msg := matcher_problem(m)
}

problems contains [["rules", i, "actions"], "actions must be a list of action patterns"] if {
	some i, rule in rule_objects
	has_key(rule, "actions")
	not is_array(rule.actions)
}

problems contains [["rules", i, "actions"], "actions cannot be empty"] if {
	some i, rule in rule_objects
	rule.actions == []
}

problems contains [["rules", i, "actions", j], msg] if {
	some i, rule in rule_objects
	is_array(rule.actions)
	some j, p in rule.actions
	not valid_action(p)
	msg := action_problem(p)
}

problems contains [["rules", i, "id"], sprintf("duplicate rule id %q (first used by rules[%d])", [id, first])] if {
	count(rule_ids) < count(rules_list)
	some i, rule in rule_objects
	id := rule.id
	firsts := [j | some j, r in rule_objects; r.id == id]
	first := min(firsts)
	first < i
}

rules_list := policy.rules if is_array(policy.rules)

rule_objects := {i: rule | some i, rule in rules_list; is_object(rule)}

name_problem(what, s) := sprintf("%s must be a string", [what]) if {
	not is_string(s)
}

else := sprintf("%s is longer than 128 characters", [what]) if {
	count(s) > 128
}

else := sprintf(`%s may contain letters, digits and ". _ : -", starting with a letter or digit`, [what])

action_problem(p) := "an action pattern must be a string" if {
	not is_string(p)
}

else := "action pattern cannot be empty" if {
	p == ""
}

else := "action pattern is longer than 256 characters" if {
	count(p) > 256
}

else := `action patterns may contain letters, digits, ". _ : / -" and "*" (any characters) only`

matcher_problem(m) := sprintf("invalid SPIFFE ID %q: %s", [m, id_problem(m)]) if {
	is_string(m)
	not contains(m, "*")
} else := glob_problem(m) if {
	is_string(m)
} else := sprintf("invalid SPIFFE ID in prefix %q: %s", [m.prefix, id_problem(m.prefix)]) if {
	is_object(m)
	object.keys(m) == {"prefix"}
	is_string(m.prefix)
	not valid_id(m.prefix)
} else := sprintf("prefix %q has no path; write %q to match the whole trust domain", [m.prefix, m.prefix]) if {
	is_object(m)
	object.keys(m) == {"prefix"}
	is_string(m.prefix)
} else := `a matcher is a string ("*", "spiffe://td", "spiffe://td/path", a glob) or { prefix: "spiffe://td/path" }`

glob_problem(m) := sprintf("invalid SPIFFE ID glob %q: scheme is missing or invalid", [m]) if {
	not startswith(m, "spiffe://")
} else := "wildcards are not allowed in the trust domain" if {
	contains(split(substring(m, 9, -1), "/")[0], "*")
} else := bad[0] if {
	parts := split(substring(m, 9, -1), "/")
	segs := array.slice(parts, 1, count(parts))
	bad := [msg |
		some i, s in segs
		msg := glob_segment_problem(s, i == (count(segs) - 1))
	]
	count(bad) > 0
} else := sprintf("invalid SPIFFE ID glob %q: %s", [m, id_problem(glob_placeholder(m))])

glob_segment_problem(s, last) := sprintf(`segment %q: "*" and "**" must be whole path segments`, [s]) if {
	contains(s, "*")
	not s in {"*", "**"}
}

else := `"**" is only allowed as the last path segment` if {
	s == "**"
	not last
}

glob_placeholder(m) := concat("/", [p |
	some s in split(m, "/")
	p := placeholder_segment(s)
])

placeholder_segment(s) := "x" if s in {"*", "**"}

else := s

# go-spiffe's reasons, checked in its order.
id_problem(s) := "cannot be empty" if {
	s == ""
}

else := "SPIFFE ID is longer than 2048 bytes" if {
	count(s) > 2048
}

else := "scheme is missing or invalid" if {
	not startswith(s, "spiffe://")
}

else := "trust domain is missing" if {
	split(substring(s, 9, -1), "/")[0] == ""
}

else := "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores" if {
	not regex.match(`^[a-z0-9._-]+$`, split(substring(s, 9, -1), "/")[0])
}

else := bad[0] if {
	parts := split(substring(s, 9, -1), "/")
	bad := [msg |
		some i, seg in parts
		i > 0
		msg := segment_problem(seg, i == (count(parts) - 1))
	]
	count(bad) > 0
}

else := "is not a valid SPIFFE ID"

segment_problem(seg, last) := "path segment characters are limited to letters, numbers, dots, dashes, and underscores" if {
	not regex.match(`^[A-Za-z0-9._-]*$`, seg)
}

else := "path cannot have a trailing slash" if {
	seg == ""
	last
}

else := "path cannot contain empty segments" if {
	seg == ""
}

else := "path cannot contain dot segments" if seg in {".", ".."}
