# frozen_string_literal: true

require 'openssl'
require 'tmpdir'
require 'fileutils'

module LibKVTest
  # Certificates the suite makes for its TLS servers, as PEM files in a temp dir:
  # a CA, a server certificate for 127.0.0.1 and localhost, a client certificate,
  # and a second CA that signed nothing here (for "wrong CA" examples).
  module Certs
    class << self
      # { ca:, ca_key:, other_ca:, other_ca_key:, server:, server_key:, client:, client_key: } => path
      def files
        @files ||= begin
          dir = Dir.mktmpdir('libkv-spec-certs')
          at_exit { FileUtils.rm_rf(dir) }
          make(dir)
        end
      end

      private

      # A test CA, a server certificate for 127.0.0.1 and localhost, and a client
      # certificate, as PEM files; and a second CA that signed nothing here.
      def make(dir)
        FileUtils.mkdir_p(dir)
        ca_key, ca = authority('libkv spec CA')
        other_key, other = authority('libkv spec other CA')
        server_key, server = leaf(ca, ca_key, '127.0.0.1', 'serverAuth', 'IP:127.0.0.1,DNS:localhost')
        client_key, client = leaf(ca, ca_key, 'libkv-client', 'clientAuth', nil)
        files = { ca: ca, other_ca: other, server: server, client: client }
        keys = { ca_key: ca_key, other_ca_key: other_key, server_key: server_key, client_key: client_key }
        paths = {}
        files.each { |name, cert| paths[name] = write(dir, "#{name}.pem", cert.to_pem) }
        keys.each { |name, key| paths[name] = write(dir, "#{name}.pem", key_pem(key)) }
        paths
      end

      def write(dir, name, text)
        File.join(dir, name).tap { |path| File.write(path, text) }
      end

      def authority(name)
        key = new_key
        cert = certificate(key, name, nil, nil)
        ext = OpenSSL::X509::ExtensionFactory.new(cert, cert)
        cert.add_extension(ext.create_extension('basicConstraints', 'CA:TRUE', true))
        cert.add_extension(ext.create_extension('keyUsage', 'keyCertSign,cRLSign', true))
        cert.add_extension(ext.create_extension('subjectKeyIdentifier', 'hash'))
        cert.sign(key, OpenSSL::Digest.new('SHA256'))
        [key, cert]
      end

      def leaf(ca, ca_key, name, usage, alt_names)
        key = new_key
        cert = certificate(key, name, ca, ca_key)
        ext = OpenSSL::X509::ExtensionFactory.new(ca, cert)
        cert.add_extension(ext.create_extension('basicConstraints', 'CA:FALSE', true))
        cert.add_extension(ext.create_extension('keyUsage', 'digitalSignature', true))
        cert.add_extension(ext.create_extension('extendedKeyUsage', usage))
        cert.add_extension(ext.create_extension('subjectAltName', alt_names)) if alt_names
        cert.add_extension(ext.create_extension('authorityKeyIdentifier', 'keyid:always'))
        cert.sign(ca_key, OpenSSL::Digest.new('SHA256'))
        [key, cert]
      end

      # EC keys; RSA under JRuby, whose OpenSSL cannot generate EC keys (9.3) or
      # writes EC keys the servers cannot read (9.4).
      def new_key
        RUBY_ENGINE == 'jruby' ? OpenSSL::PKey::RSA.new(2048) : OpenSSL::PKey::EC.generate('prime256v1')
      end

      # An EC key as PKCS#8; an RSA key as PKCS#1, which JRuby writes right.
      def key_pem(key)
        key.is_a?(OpenSSL::PKey::EC) ? key.private_to_pem : key.to_pem
      end

      def certificate(key, name, issuer, _issuer_key)
        cert = OpenSSL::X509::Certificate.new
        cert.version = 2
        cert.serial = OpenSSL::BN.rand(64)
        cert.subject = OpenSSL::X509::Name.parse("/CN=#{name}")
        cert.issuer = issuer ? issuer.subject : cert.subject
        cert.public_key = key
        cert.not_before = Time.now - 60
        cert.not_after = Time.now + 86_400
        cert
      end
    end
  end
end
