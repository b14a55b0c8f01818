package kustomize

import (
	"fmt"
	"strings"

	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// The allocation policies hold what a cluster writes on the broker to what the fleet
// table (the Fleet object, their parameter) allocates to it, as NodeRestriction holds a
// kubelet to its own Node: the server checks, not the readers' good manners. The
// one-writer policy already binds the mcnet.io/cluster label to the writer; these bind
// the content. They are per kind, so each expression is type-checked against the kind it
// reads, and they run for cluster identities only, like the one-writer policy.
//
// Receivers check the same again (internal/membership), for objects an administrator
// wrote past the policy and for a broker whose policy is missing.

// allocationPolicyName names the allocation policy of one broker resource.
func allocationPolicyName(resource string) string { return "mcnet-broker-allocation-" + resource }

// celStr quotes a value for a CEL expression.
func celStr(s string) string { return "'" + strings.ReplaceAll(s, "'", "\\'") + "'" }

// celRule is one validation of an allocation policy: expr is the CEL condition an
// object must meet, msg the CEL message expression the API server returns when it
// does not, naming the writer and what it may write instead.
type celRule struct{ expr, msg string }

// allocationRules are the checks per broker resource, in the order reported. c is the
// writer's cluster name, alloc its CIDRs from the table; both are policy variables.
func allocationRules() map[string][]celRule {
	// inAlloc and ipAlloc are format strings: %[1]s is the CEL value (a CIDR, an
	// address) that must lie inside one of the writer's allocated networks.
	const (
		c       = "variables.cluster"
		inAlloc = "variables.allocation.exists(a, cidr(a).containsCIDR(%[1]s))"
		ipAlloc = "variables.allocation.exists(a, cidr(a).containsIP(%[1]s))"
	)
	subnetOK := func(v string) string { return fmt.Sprintf("isCIDR(%[1]s) && "+inAlloc, v) }
	addrOK := func(v string) string { return fmt.Sprintf("isIP(%[1]s) && "+ipAlloc, v) }
	alloc := "variables.allocation.join(', ')"
	// A cluster's Cluster and Endpoint objects carry its name twice, as the
	// object's name and as spec.clusterID; both must be the writer's.
	identity := celRule{
		expr: "object.metadata.name == " + c + " && object.spec.clusterID == " + c,
		msg:  "'cluster ' + " + c + " + ' may only write the object named ' + " + c + " + ' with spec.clusterID ' + " + c + " + ', not ' + object.metadata.name + ' with spec.clusterID ' + object.spec.clusterID",
	}
	label := func(key string) string {
		return fmt.Sprintf("has(object.metadata.labels) && %[1]s in object.metadata.labels && object.metadata.labels[%[1]s]", celStr(key))
	}
	sourceCluster := celRule{
		expr: label(mcsv1alpha1.LabelSourceCluster) + " == " + c,
		msg:  "'cluster ' + " + c + " + ' may only publish exports labelled " + mcsv1alpha1.LabelSourceCluster + "=' + " + c,
	}
	stem := fmt.Sprintf("object.metadata.labels[%s] + '.' + object.metadata.labels[%s] + '.' + %s",
		celStr(naming.LabelServiceNamespace), celStr(mcsv1alpha1.LabelServiceName), c)
	// The service labels must be DNS labels (no dots), so an object name's third part is
	// its writer and no cluster can take a name another cluster's export needs.
	dnsLabel := "'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"
	labelled := fmt.Sprintf("%[1]s in object.metadata.labels && %[2]s in object.metadata.labels && object.metadata.labels[%[1]s].matches(%[3]s) && object.metadata.labels[%[2]s].matches(%[3]s)",
		celStr(naming.LabelServiceNamespace), celStr(mcsv1alpha1.LabelServiceName), dnsLabel)
	// outside lists the items of list that fail ok, for the messages: the
	// refusal names the very subnets or addresses at fault.
	outside := func(list, ok string) string {
		return fmt.Sprintf("%s.filter(s, !(%s)).join(', ')", list, ok)
	}
	return map[string][]celRule{
		"clusters": {identity,
			{
				expr: "object.spec.podCIDRs.all(s, " + subnetOK("s") + ") && object.spec.serviceCIDRs.all(s, " + subnetOK("s") + ")",
				msg: "'cluster ' + " + c + " + ' announces networks outside its allocation (' + " + alloc + " + '): ' + " +
					outside("(object.spec.podCIDRs + object.spec.serviceCIDRs)", subnetOK("s")),
			},
		},
		"endpoints": {identity,
			{
				expr: "object.spec.subnets.all(s, " + subnetOK("s") + ")",
				msg:  "'cluster ' + " + c + " + ' publishes subnets outside its allocation (' + " + alloc + " + '): ' + " + outside("object.spec.subnets", subnetOK("s")),
			},
			{
				// A gateway inside some member's networks would have tunnels routed into
				// that member.
				expr: "(object.spec.privateIPs + (has(object.spec.publicIPs) ? object.spec.publicIPs : [])).all(ip, isIP(ip) && " +
					"!params.spec.clusters.exists(m, (m.podCIDRs + m.serviceCIDRs).exists(n, cidr(n).containsIP(ip))))",
				msg: "'cluster ' + " + c + " + ' publishes gateway addresses that are not IPs outside every member\\'s networks: ' + " +
					"(object.spec.privateIPs + (has(object.spec.publicIPs) ? object.spec.publicIPs : [])).join(', ')",
			},
			{
				expr: "!has(object.spec.healthCheckIPs) || object.spec.healthCheckIPs.all(s, " + addrOK("s") + ")",
				msg:  "'cluster ' + " + c + " + ' publishes health-check addresses outside its allocation (' + " + alloc + " + '): ' + " + outside("object.spec.healthCheckIPs", addrOK("s")),
			},
		},
		"serviceimports": {sourceCluster,
			{
				expr: labelled + " && object.metadata.name == " + stem,
				msg:  "'cluster ' + " + c + " + ' may only publish an export named <namespace>.<service>.' + " + c + " + ' after its service labels, which must be DNS labels'",
			},
		},
		"endpointslices": {sourceCluster,
			{
				expr: labelled + " && object.metadata.name.startsWith(" + stem + " + '.')",
				msg:  "'cluster ' + " + c + " + ' may only publish EndpointSlices named <namespace>.<service>.' + " + c + " + '.<suffix> after their service labels, which must be DNS labels'",
			},
			{
				// FQDN slices are refused outright: a name cannot be checked
				// against an allocation.
				expr: "object.addressType != 'FQDN' && (!has(object.endpoints) || object.endpoints.all(e, e.addresses.all(s, " + addrOK("s") + ")))",
				msg: "'cluster ' + " + c + " + ' publishes endpoint addresses outside its allocation (' + " + alloc + " + '): ' + " +
					"(has(object.endpoints) ? object.endpoints.map(e, e.addresses.filter(s, !(" + addrOK("s") + ")).join(', ')).filter(s, s != '').join(', ') : object.addressType)",
			},
		},
	}
}

// allocationPolicies renders one policy and binding per broker resource, with the
// fleet table called fleet as their parameter.
func allocationPolicies(ns, fleet string) []any {
	// Cluster identities are the broker namespace's ServiceAccounts with the
	// broker prefix; the rest of the user name is the cluster's name.
	prefix := "system:serviceaccount:" + ns + ":" + naming.BrokerServiceAccountPrefix
	resources := []struct{ group, resource string }{
		{mcnetv1.GroupVersion.Group, "clusters"},
		{mcnetv1.GroupVersion.Group, "endpoints"},
		{mcsv1alpha1.GroupVersion.Group, "serviceimports"},
		{"discovery.k8s.io", "endpointslices"},
	}
	rules := allocationRules()
	labels := map[string]string{"app.kubernetes.io/part-of": "mcnet"}
	var out []any
	for _, r := range resources {
		name := allocationPolicyName(r.resource)
		// The first validation refuses a writer the table does not list; the
		// kind's own rules follow in the order allocationRules gives them.
		validations := []any{map[string]any{
			"expression":        "variables.member.size() == 1",
			"messageExpression": "'cluster ' + variables.cluster + ' is not a member of fleet ' + params.metadata.name",
			"reason":            "Forbidden",
		}}
		for _, v := range rules[r.resource] {
			validations = append(validations, map[string]any{
				// Non-members are refused above; their content is not worth reading.
				"expression":        "variables.member.size() != 1 || (" + v.expr + ")",
				"messageExpression": v.msg,
				"reason":            "Forbidden",
			})
		}
		out = append(out,
			map[string]any{
				"apiVersion": "admissionregistration.k8s.io/v1",
				"kind":       "ValidatingAdmissionPolicy",
				"metadata":   map[string]any{"name": name, "labels": labels},
				"spec": map[string]any{
					// Fail closed: a policy the API server cannot evaluate
					// refuses the write rather than letting it through.
					"failurePolicy": "Fail",
					"paramKind":     map[string]string{"apiVersion": mcnetv1.GroupVersion.String(), "kind": "Fleet"},
					"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
						"apiGroups":   []string{r.group},
						"apiVersions": []string{"*"},
						"operations":  []string{"CREATE", "UPDATE"},
						"resources":   []string{r.resource},
					}}},
					// Only cluster identities are held to an allocation; what an
					// administrator writes is checked again by the receivers.
					"matchConditions": []any{map[string]any{
						"name":       "cluster-identity",
						"expression": fmt.Sprintf("request.userInfo.username.startsWith('%s')", prefix),
					}},
					"variables": []any{
						map[string]any{"name": "cluster", "expression": fmt.Sprintf("request.userInfo.username.substring(%d)", len(prefix))},
						map[string]any{"name": "member", "expression": "params.spec.clusters.filter(m, m.name == variables.cluster)"},
						map[string]any{"name": "allocation", "expression": "variables.member.size() == 1 ? variables.member[0].podCIDRs + variables.member[0].serviceCIDRs : []"},
					},
					"validations": validations,
				},
			},
			map[string]any{
				"apiVersion": "admissionregistration.k8s.io/v1",
				"kind":       "ValidatingAdmissionPolicyBinding",
				"metadata":   map[string]any{"name": name, "labels": labels},
				"spec": map[string]any{
					"policyName": name,
					// Without the table nothing a cluster writes can be checked: refuse it.
					"paramRef":          map[string]any{"name": fleet, "parameterNotFoundAction": "Deny"},
					"validationActions": []string{"Deny"},
					"matchResources": map[string]any{
						"namespaceSelector": map[string]any{
							"matchLabels": map[string]string{"kubernetes.io/metadata.name": ns},
						},
					},
				},
			},
		)
	}
	return out
}
