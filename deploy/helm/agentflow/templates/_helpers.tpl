{{/* Names and labels shared by every object of the chart. */}}

{{- define "agentflow.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. Call with the root context. */}}
{{- define "agentflow.labels" -}}
app.kubernetes.io/name: agentflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* Selector labels of one part. Call with (dict "root" $ "component" "api"). */}}
{{- define "agentflow.selectorLabels" -}}
app.kubernetes.io/name: agentflow
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "agentflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The ConfigMap and the Secret, as environment variables. Call with the root context. */}}
{{- define "agentflow.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "agentflow.fullname" . }}-config
  - secretRef:
      name: {{ .Values.existingSecret }}
{{- end -}}

{{- define "agentflow.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
{{- end -}}

{{/* Read-only root filesystem; /tmp is an emptyDir (see agentflow.tmpVolume). */}}
{{- define "agentflow.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{- define "agentflow.tmpVolume" -}}
volumes:
  - name: tmp
    emptyDir: {}
{{- end -}}
